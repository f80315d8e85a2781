/* rules.h -- the rule engine module (docs/rules.md): SQL-like rules over
 * messages and events, evaluated on the workers, feeding actions. */
#ifndef ANTENNA_RULES_H
#define ANTENNA_RULES_H

struct module_s;
extern const struct module_s rules_module;

#endif
