#!/usr/bin/env bash
# Start idmsync's test OpenIDM in the foreground (the harness runs it in its own process group).
# OPENIDM_OPTS: extra JVM options (heap, system properties).
set -euo pipefail
home="$(cd "$(dirname "$0")" && pwd)"
cd "$home"
mkdir -p logs
# Java 17: the launcher, OrientDB and the LDAP connector reach into JDK internals.
add_opens=(
  --add-opens=java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-exports=java.naming/com.sun.jndi.ldap=ALL-UNNAMED
)
# shellcheck disable=SC2086  # OPENIDM_OPTS is a list of options
exec java "${add_opens[@]}" ${OPENIDM_OPTS:-} \
  -Djava.util.logging.config.file="$home/conf/logging.properties" \
  -Djava.awt.headless=true \
  -Dopenidm.system.server.root="$home" \
  -classpath "$home/bin/*" \
  org.forgerock.commons.launcher.Main -c "$home/bin/launcher.json" -p "$home"
