# acme-sidecar
#
#   make          build/acme-sidecar, build/acmectl
#   make check    unit tests (cmocka) and integration tests (pytest, Pebble)
#   make demo     install dependencies, issue certificates from a local Pebble

PKGS	 = libevent libevent_openssl openssl jansson libmicrohttpd
CC	?= cc
CFLAGS	?= -O2 -g
CFLAGS	+= -std=gnu11 -Wall -Wextra -Werror=implicit-function-declaration \
	   -D_GNU_SOURCE -pthread $(shell pkg-config --cflags $(PKGS))
LDLIBS	+= $(shell pkg-config --libs $(PKGS)) -lm -pthread

BUILD	 = build
DAEMON_SRCS = $(wildcard src/*.c)
DAEMON_OBJS = $(DAEMON_SRCS:src/%.c=$(BUILD)/obj/%.o)
LIB_OBJS    = $(filter-out $(BUILD)/obj/main.o,$(DAEMON_OBJS))
CTL_SRCS    = $(wildcard src/acmectl/*.c)
CTL_OBJS    = $(CTL_SRCS:src/acmectl/%.c=$(BUILD)/obj/acmectl/%.o)
UNIT_SRCS   = $(wildcard tests/unit/test_*.c)
UNIT_BINS   = $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

PYTEST	?= /usr/bin/python3 -m pytest

all: $(BUILD)/acme-sidecar $(BUILD)/acmectl module

# The nginx module, where nginx-dev is installed (the script says so and
# succeeds when it is not).  The script knows when to configure again.
module:
	scripts/build-nginx-module $(BUILD)

$(BUILD)/acme-sidecar: $(DAEMON_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/acmectl: $(CTL_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: src/%.c src/sidecar.h proto/acme_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Iproto -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c tests/unit/test_util.h proto/acme_shm.h $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Iproto -o $@ $< $(LIB_OBJS) $(LDLIBS) -lcmocka

deps:
	scripts/install-deps

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: all
	$(PYTEST) -q tests/integration

check: deps all
	$(MAKE) unit
	$(MAKE) integration

demo: deps all
	scripts/demo

clean:
	rm -rf $(BUILD)

.PHONY: all module deps unit integration check demo clean
