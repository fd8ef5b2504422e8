#!/bin/sh
# Install (Debian's postgresql), start it on loopback, and make a role `automl` that may create
# databases: the PostgreSQL tests create and drop a database of their own each. Prints the URL
# they read from AUTOML_TEST_POSTGRES_URL. Used by `make test` (and so by .ci/run).
set -e
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q postgresql >&2
fi
CLUSTER=$(pg_lsclusters -h | head -n 1)
[ -n "$CLUSTER" ] || { echo "no PostgreSQL cluster after installing postgresql" >&2; exit 1; }
set -- $CLUSTER
VERSION=$1; NAME=$2; PORT=$3; STATUS=$4
# pg_ctlcluster talks on stdout ("Removed stale pid file."): only the URL may go there.
[ "$STATUS" = online ] || $SUDO pg_ctlcluster "$VERSION" "$NAME" start >&2
cd /  # the postgres user may not enter the project's folder
$SUDO runuser -u postgres -- psql -q -p "$PORT" -c \
    "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'automl') THEN
     CREATE ROLE automl LOGIN CREATEDB PASSWORD 'automl-tests'; END IF; END\$\$;" >/dev/null
echo "postgresql://automl:automl-tests@127.0.0.1:$PORT/postgres"
