# install.cmake -- what `make install` / `cmake --install` puts where, and
# the Debian package built from it (`make deb`: CPack's DEB generator).
#
# Prefix /usr (the package) installs the configuration in /etc, the unit in
# /lib/systemd/system; another prefix (/usr/local by default) keeps
# everything under it.  The unit is generated with the binary's and the
# configuration's real paths.
include(GNUInstallDirs)

set(ANTENNA_BIN ${CMAKE_INSTALL_FULL_BINDIR}/antenna)
set(ANTENNA_CONF ${CMAKE_INSTALL_FULL_SYSCONFDIR}/antenna/antenna.yaml)
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(ANTENNA_UNIT_DIR /lib/systemd/system)
else()
  set(ANTENNA_UNIT_DIR ${CMAKE_INSTALL_PREFIX}/lib/systemd/system)
endif()
configure_file(${CMAKE_SOURCE_DIR}/packaging/antenna.service.in
               ${CMAKE_BINARY_DIR}/antenna.service @ONLY)

install(TARGETS antenna RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_SOURCE_DIR}/packaging/antenna.yaml
        DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/antenna)
install(FILES ${CMAKE_SOURCE_DIR}/packaging/antenna.logrotate
        DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/logrotate.d RENAME antenna)
install(FILES ${CMAKE_BINARY_DIR}/antenna.service DESTINATION ${ANTENNA_UNIT_DIR})
install(FILES ${CMAKE_SOURCE_DIR}/man/antenna.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${CMAKE_SOURCE_DIR}/man/antenna.yaml.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES ${CMAKE_SOURCE_DIR}/man/antenna-ctl.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${CMAKE_SOURCE_DIR}/config.example.yaml ${CMAKE_SOURCE_DIR}/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}
        FILES_MATCHING PATTERN "*.md")

# ---- the Debian package
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME antenna)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "antenna developers <antenna@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "MQTT 3.1/3.1.1/5.0 broker for device fleets")
set(CPACK_PACKAGE_DESCRIPTION
    "antenna is an MQTT broker: TCP, TLS and WebSocket listeners, persistent\n sessions in RocksDB, an authentication chain with ACLs, a REST management\n API with Prometheus metrics and a web dashboard.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/deb/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/deb/postinst
    ${CMAKE_SOURCE_DIR}/packaging/deb/prerm
    ${CMAKE_SOURCE_DIR}/packaging/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
