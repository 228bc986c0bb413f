# install.cmake - what `cmake --install` puts where (included by CMakeLists.txt).
#
# Layout (GNUInstallDirs): PREFIX/sbin/mailwarden, PREFIX/share/man/man{5,8},
# PREFIX/share/mailwarden/policies, PREFIX/share/mailwarden/{postfix,sendmail,exim}
# (the MTA snippets: sendmail.mc includes the .m4 from there, so it must not live
# under /usr/share/doc, which dpkg may be told to leave out), SYSCONF/mailwarden/
# mailwarden.conf (the sample; an existing file is never replaced), SYSCONF/
# logrotate.d/mailwarden, PREFIX/lib/systemd/system/*.{service,timer},
# PREFIX/lib/sysusers.d/mailwarden.conf, PREFIX/lib/tmpfiles.d/mailwarden.conf.
# SYSCONF is /etc for the prefix /usr (Debian), PREFIX/etc otherwise, so that
# `cmake --install --prefix DIR` puts everything under DIR.
#
# The unit files in contrib/ are written for the /usr prefix (/usr/sbin,
# /etc/mailwarden) and tested as they are (test_systemd_unit.py); the installed
# copies are generated from them with the configured paths substituted, so the
# unit always runs the binary this tree installs.
include(GNUInstallDirs)

if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(MW_SYSCONFDIR "/etc")
else()
  set(MW_SYSCONFDIR "${CMAKE_INSTALL_SYSCONFDIR}")
endif()
set(MW_UNITDIR "lib/systemd/system" CACHE STRING "systemd unit directory, relative to the prefix")
set(MW_FULL_SBINDIR "${CMAKE_INSTALL_FULL_SBINDIR}")
if(IS_ABSOLUTE "${MW_SYSCONFDIR}")
  set(MW_FULL_SYSCONFDIR "${MW_SYSCONFDIR}")
else()
  set(MW_FULL_SYSCONFDIR "${CMAKE_INSTALL_PREFIX}/${MW_SYSCONFDIR}")
endif()

# contrib file -> build/contrib-gen/NAME with /usr/sbin and /etc/mailwarden
# replaced by the configured directories
function(mw_generate src out)
  file(READ "${PROJECT_SOURCE_DIR}/${src}" text)
  string(REPLACE "/usr/sbin/mailwarden" "${MW_FULL_SBINDIR}/mailwarden" text "${text}")
  string(REPLACE "/etc/mailwarden" "${MW_FULL_SYSCONFDIR}/mailwarden" text "${text}")
  string(REPLACE "/usr/share/mailwarden" "${CMAKE_INSTALL_FULL_DATADIR}/mailwarden" text "${text}")
  file(WRITE "${PROJECT_BINARY_DIR}/contrib-gen/${out}.tmp" "${text}")
  configure_file("${PROJECT_BINARY_DIR}/contrib-gen/${out}.tmp" "${PROJECT_BINARY_DIR}/contrib-gen/${out}" COPYONLY)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/${src}")
endfunction()
mw_generate(contrib/systemd/mailwarden.service mailwarden.service)
mw_generate(contrib/systemd/mailwarden-report.service mailwarden-report.service)
mw_generate(contrib/systemd/mailwarden-report.timer mailwarden-report.timer)
mw_generate(contrib/systemd/mailwarden-failure-report.service mailwarden-failure-report.service)
mw_generate(contrib/systemd/mailwarden-failure-report.timer mailwarden-failure-report.timer)
mw_generate(contrib/systemd/mailwarden.tmpfiles mailwarden.tmpfiles)
mw_generate(contrib/sendmail/mailwarden.m4 mailwarden.m4)

install(TARGETS mailwarden DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(DIRECTORY policies/ DESTINATION ${CMAKE_INSTALL_DATADIR}/mailwarden/policies)
install(FILES docs/mailwarden.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES docs/mailwarden.conf.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES ${PROJECT_BINARY_DIR}/contrib-gen/mailwarden.service
              ${PROJECT_BINARY_DIR}/contrib-gen/mailwarden-report.service
              ${PROJECT_BINARY_DIR}/contrib-gen/mailwarden-report.timer
              ${PROJECT_BINARY_DIR}/contrib-gen/mailwarden-failure-report.service
              ${PROJECT_BINARY_DIR}/contrib-gen/mailwarden-failure-report.timer
        DESTINATION ${MW_UNITDIR})
install(FILES contrib/systemd/mailwarden.sysusers DESTINATION lib/sysusers.d RENAME mailwarden.conf)
install(FILES ${PROJECT_BINARY_DIR}/contrib-gen/mailwarden.tmpfiles DESTINATION lib/tmpfiles.d
        RENAME mailwarden.conf)
install(FILES contrib/logrotate/mailwarden DESTINATION ${MW_SYSCONFDIR}/logrotate.d)
install(FILES contrib/postfix/main.cf.snippet contrib/postfix/master.cf.snippet
        DESTINATION ${CMAKE_INSTALL_DATADIR}/mailwarden/postfix)
install(FILES ${PROJECT_BINARY_DIR}/contrib-gen/mailwarden.m4 DESTINATION ${CMAKE_INSTALL_DATADIR}/mailwarden/sendmail)
install(FILES contrib/exim/exim.conf.template contrib/exim/mailwarden-data.acl contrib/exim/mailwarden-rcpt.acl
        DESTINATION ${CMAKE_INSTALL_DATADIR}/mailwarden/exim)
# the sample, always, and as the configuration only when there is none
install(FILES contrib/mailwarden.conf DESTINATION ${CMAKE_INSTALL_DATADIR}/mailwarden RENAME mailwarden.conf.sample)
install(DIRECTORY DESTINATION ${MW_SYSCONFDIR}/mailwarden)
install(CODE "
  set(_etc \"${MW_SYSCONFDIR}\")
  if(NOT IS_ABSOLUTE \"\${_etc}\")
    set(_etc \"\${CMAKE_INSTALL_PREFIX}/\${_etc}\")
  endif()
  set(_conf \"\$ENV{DESTDIR}\${_etc}/mailwarden/mailwarden.conf\")
  if(EXISTS \"\${_conf}\")
    message(STATUS \"Keeping: \${_conf} (the sample is in share/mailwarden/mailwarden.conf.sample)\")
  else()
    # file(INSTALL) prepends DESTDIR itself (the EXISTS test above must not lose it)
    file(INSTALL \"${PROJECT_SOURCE_DIR}/contrib/mailwarden.conf\" DESTINATION \"\${_etc}/mailwarden\")
  endif()
")
