# Tandem: make demo (the main job), make test (everything), make install.
# Every target installs what it needs first, skipping what is already there.

SHELL := /bin/bash
PG_CONFIG ?= /usr/bin/pg_config
PGRX_VERSION := 0.18.0
APT_PACKAGES := postgresql-server-dev-15 libclang-dev clang sudo libssl-dev pkg-config python3
# A data directory for the scratch PostgreSQL of `cargo pgrx test`; initdb
# refuses to run as root, so it belongs to the postgres user.
PGRX_PGDATA := $(CURDIR)/target/pgrx-pgdata
AS_ROOT := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export TANDEM_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: all deps apt pgrx postgres install sqlite-ext demo test test-extension test-workspace lint bench reliability clean

all: test

## Dependencies ---------------------------------------------------------------

deps: apt pgrx postgres

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(AS_ROOT) apt-get update -qq && $(AS_ROOT) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

pgrx: apt
	@if ! cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)"; then \
		echo "installing cargo-pgrx $(PGRX_VERSION) (a few minutes, once)"; \
		cargo install cargo-pgrx@$(PGRX_VERSION) --locked; \
	fi
	@if ! grep -qs '^pg15 *= *"$(PG_CONFIG)"' $${PGRX_HOME:-$$HOME/.pgrx}/config.toml; then \
		cargo pgrx init --pg15 $(PG_CONFIG); \
	fi

# The PostgreSQL 15 on 127.0.0.1:5432 that the demo and the tests use.
postgres:
	@if ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		echo "starting PostgreSQL"; \
		$(AS_ROOT) pg_ctlcluster --skip-systemctl-redirect 15 main start; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	fi

## Build and install ------------------------------------------------------------

# Puts the extension into the running PostgreSQL: CREATE EXTENSION tandem.
# Earlier releases' install scripts go beside the upgrade scripts (pgrx
# copies only the latter), so an old database can be made and upgraded.
# Built into target/ first, then put in place by install(1), which
# replaces a file rather than writing over it: a running session keeps the
# library it loaded (cargo pgrx install wrote over it in place, and a
# gateway's sessions crashed on code that changed under them; found by an
# attack while the extension was reinstalled).
PACKAGE := target/release/tandem-pg15
install: deps
	cd extension && cargo pgrx package --pg-config $(PG_CONFIG)
	$(AS_ROOT) install -m 755 $(PACKAGE)$$($(PG_CONFIG) --pkglibdir)/tandem.so $$($(PG_CONFIG) --pkglibdir)/
	$(AS_ROOT) install -m 644 $(PACKAGE)$$($(PG_CONFIG) --sharedir)/extension/tandem* $$($(PG_CONFIG) --sharedir)/extension/
	$(AS_ROOT) install -m 644 extension/sql/tandem--*.sql $$($(PG_CONFIG) --sharedir)/extension/

# The loadable SQLite extension: target/release/libtandem_sqlite.so, where
# the README's `.load target/release/libtandem_sqlite` finds it.
sqlite-ext:
	cargo build --release -q -p tandem-sqlite

## The main job -----------------------------------------------------------------

demo: install sqlite-ext
	cargo run --release -q -p tandem-cli -- demo

## Tests ------------------------------------------------------------------------

test: test-extension test-workspace

# #[pg_test] tests, in a scratch PostgreSQL started by cargo-pgrx.
test-extension: deps
	mkdir -p $(PGRX_PGDATA) && $(AS_ROOT) chown postgres $(PGRX_PGDATA)
	cd extension && cargo pgrx test pg15 --runas postgres --pgdata $(PGRX_PGDATA)

# Unit tests and the end-to-end tests against the running PostgreSQL. The
# pgrx tests above install a test build of the extension, so the release
# build goes back in first.
test-workspace: install sqlite-ext
	cargo test

# The formatted tree and a clippy without warnings (CI runs it before the
# tests; the loadable extension builds apart, so it is checked apart).
lint: apt
	@command -v rustup >/dev/null && rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@command -v rustup >/dev/null && rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	cargo fmt --all --check
	cargo fmt --manifest-path sqlite-ext/Cargo.toml --check
	cargo clippy -q --all-targets -- -D warnings

# The fault suite at full length: 1000 faults (kills, terminated sessions,
# gateway kills, PostgreSQL crashes) while both sides write; `make test`
# runs 50 of them. Prints one JSON line of figures (docs/reliability.md).
reliability: install
	TANDEM_FAULTS=1000 cargo test --release -p tandem-cli --test faults -- --nocapture

bench: install
	cargo run --release -p tandem-cli -- bench $(BENCH_ARGS)

clean:
	cargo clean
