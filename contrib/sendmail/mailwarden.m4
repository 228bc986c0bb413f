dnl mailwarden for Sendmail: include this from your sendmail.mc (before MAILER lines):
dnl     define(`MAILWARDEN_SOCKET', `inet:8894@127.0.0.1')dnl   (optional; unix: local:/run/mailwarden/milter.sock)
dnl     include(`/usr/share/mailwarden/sendmail/mailwarden.m4')dnl   (cmake --install / the package put it there)
dnl and rebuild sendmail.cf.  The test suite (tests/integration/test_sendmail.py) includes
dnl this very file.
dnl
dnl F=T: if mailwarden is down, mail is temporarily refused (4xx) and retried: fail-closed.
dnl For fail-open use F= (no flag: the filter is skipped); F=R rejects (5xx).
dnl T=: connect 10 s, sending 30 s, reading replies 30 s, end of message 5 min (DNS lookups).
dnl
dnl Macros: mailwarden needs {client_addr} (connect), {daemon_name} (MSA = submission),
dnl {auth_authen} (SASL login, decides outbound signing) and i (queue id, for the log).
dnl Sendmail sends i already at MAIL FROM.  mailwarden also asks for them itself
dnl (SMFIF_SETSYMLIST); the lists below make older setups work too.
ifdef(`MAILWARDEN_SOCKET',, `define(`MAILWARDEN_SOCKET', `inet:8894@127.0.0.1')')dnl
INPUT_MAIL_FILTER(`mailwarden', `S='MAILWARDEN_SOCKET`, F=T, T=C:10s;S:30s;R:30s;E:5m')dnl
define(`confMILTER_MACROS_CONNECT', `j, _, {daemon_name}, {if_name}, {if_addr}, {client_addr}, {client_name}, {client_port}')dnl
define(`confMILTER_MACROS_HELO', `{tls_version}, {cipher}, {cipher_bits}, {cert_subject}, {cert_issuer}')dnl
define(`confMILTER_MACROS_ENVFROM', `i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}')dnl
define(`confMILTER_MACROS_EOM', `{msg_id}, i, {daemon_name}, {auth_authen}')dnl
