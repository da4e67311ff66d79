#!/bin/sh
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > /tmp/password
    initdb --username="${POSTGRES_USER:=postgres}" --pwfile=/tmp/password --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm /tmp/password
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # Set up without TCP, as the official image does, so that a client
    # that connects over TCP finds the server ready.
    pg_ctl --wait --options="-c listen_addresses=''" start >/dev/null
    if [ "${POSTGRES_DB:=$POSTGRES_USER}" != postgres ]; then
        psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres --command "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    fi
    pg_ctl --wait --mode=fast stop >/dev/null
fi
exec "$@"
