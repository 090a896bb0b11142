#!/usr/bin/env bash
# Fetches Apache Kafka's broker (kafka_2.13 and its runtime dependencies) from Maven
# Central with mvn, once, into a cache outside the clone keyed by the version, and
# prints the folder holding the jars (run it with `java -cp 'DIR/*' kafka.Kafka`).
# Progress goes to stderr. Exit 3: Java or Maven is not installed.
#
#   KAFKA_VERSION       the broker's version (default: the one pinned below)
#   WEFT_KAFKA_CACHE    cache root (default /var/cache/weft/kafka)
set -euo pipefail

version="${KAFKA_VERSION:-4.1.1}"
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "kafka/install.sh: $tool is not installed" >&2
    exit 3
  fi
done
cache="${WEFT_KAFKA_CACHE:-/var/cache/weft/kafka}/kafka-${version}"
libs="$cache/libs"
if [ -f "$cache/complete" ]; then
  echo "$libs"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [ -f "$cache/complete" ]; then
  echo "$libs"
  exit 0
fi
started=$(date +%s)
echo "kafka/install.sh: fetching Kafka $version into $cache (once)" >&2
# A throwaway project whose only dependencies are the broker (its storage formatter,
# kafka.tools.StorageTool, is in the same jar) and a logging backend: the broker logs
# through SLF4J and without one it is silent, so a failed start would say nothing.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weft.tests</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>2.0.17</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
POM
rm -rf "$libs.partial"
mvn -B -q -Dstyle.color=never -f "$work/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$libs.partial" >&2
rm -rf "$libs"
mv "$libs.partial" "$libs"
echo "kafka $version" >"$cache/complete"
echo "kafka/install.sh: fetched $(find "$libs" -name "*.jar" | wc -l) jars in $(($(date +%s) - started)) s" >&2
echo "$libs"
