#!/bin/sh
# check_layers.sh -- the layering rule, checked by ctest: src/core, src/mqtt
# and src/net include no header of the broker, the store, auth or the API.
# The build enforces it too (antenna_net's include path has none of those
# folders); this check names the offending line, and also catches a path
# written out ("../broker/x.h").  Usage: check_layers.sh [source dir]
root=${1:-$(dirname "$0")/..}
bad=0
for dir in broker store auth api; do
    for h in "$root"/src/$dir/*.h; do
        [ -e "$h" ] || continue
        name=$(basename "$h")
        hits=$(grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]([^\">]*/)?$name[\">]" \
                    "$root"/src/core/*.[ch] "$root"/src/mqtt/*.[ch] "$root"/src/net/*.[ch] 2>/dev/null)
        if [ -n "$hits" ]; then
            echo "layering: src/$dir/$name is included below the broker:"
            echo "$hits"
            bad=1
        fi
    done
done
hits=$(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]*(broker|store|auth|api)/' \
            "$root"/src/core/*.[ch] "$root"/src/mqtt/*.[ch] "$root"/src/net/*.[ch] 2>/dev/null)
if [ -n "$hits" ]; then
    echo "layering: a path into an upper layer:"
    echo "$hits"
    bad=1
fi
[ $bad -eq 0 ] && echo "layering: src/core, src/mqtt and src/net include no upper-layer header"
exit $bad
