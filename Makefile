# acme-sidecar
#
#   make          build/acme-sidecar, build/acmectl
#   make check    unit tests (cmocka), plain and under ASan+UBSan and
#                 valgrind; integration tests (pytest, Pebble) once each,
#                 under ASan+UBSan (those marked serial: plain), a few
#                 under valgrind; and each fuzzer 20 s.  Then each
#                 stage's time (scripts/check-stages)
#   make integration  the integration tests on the plain build
#   make sanitize     unit and integration tests under ASan+UBSan
#   make fuzz     each libFuzzer harness for FUZZ_TIME seconds
#   make demo     install dependencies, issue certificates from a local Pebble

PKGS	 = libevent libevent_openssl openssl jansson libmicrohttpd hiredis \
	   ldns
CC	?= cc
CFLAGS	?= -O2 -g
CFLAGS	+= -std=gnu11 -Wall -Wextra -Werror=implicit-function-declaration \
	   -D_GNU_SOURCE -pthread $(shell pkg-config --cflags $(PKGS)) $(SANFLAGS)
LDFLAGS	+= $(SANFLAGS)
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
# make check: builds and unit test binaries JOBS at a time, the
# integration tests on PYTEST_WORKERS pytest-xdist workers (they spend
# most of their time waiting), then those marked serial alone
# (tests/integration/run).  $(2): the passes of tests/integration/run
# (PASSES), both when empty.
JOBS		?= $(shell nproc)
PYTEST_WORKERS	?= 3
integration_run	 = PYTEST="$(PYTEST)" PYTEST_WORKERS=$(1) PASSES="$(2)" \
		   tests/integration/run -q

all: $(BUILD)/acme-sidecar $(BUILD)/acmectl module

# The nginx module, where nginx-dev is installed (the script says so and
# succeeds when it is not).  The script knows when to configure again.
module:
	scripts/build-nginx-module $(BUILD)

$(BUILD)/acme-sidecar: $(DAEMON_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# acmectl speaks HTTP through libcurl, which the daemon does not link.
CTL_LDLIBS = $(shell pkg-config --libs libcurl jansson)
$(BUILD)/acmectl: $(CTL_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CTL_LDLIBS)

$(BUILD)/obj/%.o: src/%.c src/sidecar.h proto/acme_shm.h proto/acme_ident.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Iproto -c -o $@ $<

$(CTL_OBJS): src/acmectl/ctl.h
$(BUILD)/obj/order.o $(BUILD)/obj/order_ari.o $(BUILD)/obj/order_cluster.o \
$(BUILD)/obj/order_dns.o: src/order.h
$(BUILD)/obj/control.o $(BUILD)/obj/control_routes.o \
$(BUILD)/obj/control_stream.o: src/control.h
$(BUILD)/obj/control_routes.o $(BUILD)/obj/metrics.o \
$(BUILD)/obj/textbuf.o: src/textbuf.h
$(BUILD)/obj/conf.o $(BUILD)/obj/conf_cert.o $(BUILD)/obj/conf_cluster.o \
$(BUILD)/obj/conf_lex.o $(BUILD)/obj/conf_load.o $(BUILD)/obj/conf_parse.o \
$(BUILD)/obj/nginx_conf.o $(BUILD)/tests/test_conf: src/conf_int.h

$(BUILD)/tests/%: tests/unit/%.c tests/unit/test_util.h proto/acme_shm.h \
    proto/acme_ident.h $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Iproto -o $@ $< $(LIB_OBJS) $(LDLIBS) -lcmocka

include tests/fuzz/fuzz.mk

deps:
	scripts/install-deps

# Each test binary is a target of its own (.run, .san, .memcheck), so
# that make -j runs them side by side; -O prints each one's output whole.
unit: $(UNIT_BINS)
	@$(MAKE) --no-print-directory -j$(JOBS) -O $(UNIT_BINS:%=%.run)

$(UNIT_BINS:%=%.run): %.run: %
	@echo "== $<"; $<

integration: all
	$(call integration_run,$(PYTEST_WORKERS)) tests/integration

# The tests marked serial alone: they measure CPU or wall-clock time, so
# make check runs them on the plain build, not the sanitizers'.
integration-serial: all
	$(call integration_run,1,serial) tests/integration

# Every test once: the integration tests not marked serial run in the
# sanitizers' pass only (a plain pass would find nothing more: the same
# tests, the same assertions), the serial ones on the plain build, and
# test_memcheck.py (which the sanitizers' pass skips) in memcheck.  Each
# stage's time is printed at the end.
check:
	@scripts/check-stages "$(MAKE)" deps check-build unit \
	    "sanitize SAN_PASSES=parallel" integration-serial memcheck \
	    fuzz-check

check-build:
	$(MAKE) -j$(JOBS) all
	$(MAKE) -j$(JOBS) $(UNIT_BINS)

# The unit and integration tests with the daemon, acmectl and the unit
# tests built with AddressSanitizer and UndefinedBehaviorSanitizer
# (LeakSanitizer included).  Every report goes to a file under
# $(SAN_BUILD)/reports, and any file there fails the run: a report from a
# process whose exit status no test looks at still counts.  SAN_PASSES:
# the integration passes (make check leaves the serial one out).
SAN_BUILD	 = build/san
SAN_PASSES	?= parallel serial
SAN_FLAGS	 = -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
		   -fno-sanitize-recover=all
SAN_REPORTS	 = $(abspath $(SAN_BUILD))/reports
SAN_ENV		 = ASAN_OPTIONS=log_path=$(SAN_REPORTS)/asan:detect_leaks=1:abort_on_error=0 \
		   UBSAN_OPTIONS=log_path=$(SAN_REPORTS)/ubsan:print_stacktrace=1 \
		   LSAN_OPTIONS=log_path=$(SAN_REPORTS)/lsan

SAN_UNIT_BINS	 = $(UNIT_BINS:$(BUILD)/%=$(SAN_BUILD)/%)

sanitize:
	$(MAKE) -j$(JOBS) BUILD=$(SAN_BUILD) SANFLAGS="$(SAN_FLAGS)" \
	    $(SAN_BUILD)/acme-sidecar $(SAN_BUILD)/acmectl san-unit-bins
	rm -rf $(SAN_REPORTS) && mkdir -p $(SAN_REPORTS)
	@$(MAKE) --no-print-directory -j$(JOBS) -O $(SAN_UNIT_BINS:%=%.san)
	$(SAN_ENV) ACME_SIDECAR=$(abspath $(SAN_BUILD))/acme-sidecar \
	    ACMECTL=$(abspath $(SAN_BUILD))/acmectl ACME_SANITIZED=1 \
	    $(call integration_run,$(PYTEST_WORKERS),$(SAN_PASSES)) \
	    tests/integration
	@if [ -n "$$(ls -A $(SAN_REPORTS))" ]; then \
	    echo "sanitizer reports:"; cat $(SAN_REPORTS)/*; exit 1; fi
	@echo "sanitize: no report"

san-unit-bins: $(UNIT_BINS)

# Built by the sanitize target above (BUILD=$(SAN_BUILD)).
$(SAN_UNIT_BINS:%=%.san): %.san:
	@echo "== $* (sanitizers)"; $(SAN_ENV) $*

# The unit tests under valgrind memcheck, and the daemon under memcheck
# through issuance, reload, every change of the control API and exit
# (tests/integration/test_memcheck.py, and MEMCHECK_TESTS: every test
# whose daemon is a MemcheckSidecar, which the sanitizers' pass skips and
# make check runs nowhere else), then through test_control.py with
# every daemon it starts under valgrind (ACME_MEMCHECK_LOGS: any finding in
# a log there fails the run).  The whole integration suite under valgrind
# would take most of an hour: RSA key generation slows by 50 times and
# outruns the tests' timeouts.
# test_shm's hammer of forked readers is skipped (TEST_SHM_ROUNDS=0): each
# reader's leak check would report the parent's buffers.
MEMCHECK	 = valgrind -q --error-exitcode=99 --leak-check=full \
		   --show-leak-kinds=definite,indirect,possible \
		   --errors-for-leak-kinds=definite,indirect,possible

VG_LOGS		 = $(abspath $(BUILD))/valgrind
MEMCHECK_TESTS	 = tests/integration/test_memcheck.py \
    tests/integration/test_regressions.py::test_issuer_removed_while_new_account_waits

# A daemon under valgrind keeps a core busy: JOBS pytest workers here.
memcheck: $(UNIT_BINS)
	@$(MAKE) --no-print-directory -j$(JOBS) -O $(UNIT_BINS:%=%.memcheck)
	$(call integration_run,$(JOBS)) $(MEMCHECK_TESTS)
	rm -rf $(VG_LOGS) && mkdir -p $(VG_LOGS)
	ACME_MEMCHECK_LOGS=$(VG_LOGS) $(call integration_run,$(JOBS)) \
	    tests/integration/test_control.py
	@if [ -n "$$(find $(VG_LOGS) -type f -size +0)" ]; then \
	    echo "valgrind reports:"; cat $(VG_LOGS)/*; exit 1; fi
	@echo "memcheck: no report"

$(UNIT_BINS:%=%.memcheck): %.memcheck: %
	@echo "== $< (memcheck)"; TEST_SHM_ROUNDS=0 $(MEMCHECK) $< >/dev/null

demo: deps all
	scripts/demo

clean:
	rm -rf $(BUILD)

.PHONY: all module deps unit integration integration-serial check \
	check-build sanitize san-unit-bins \
	memcheck demo clean $(UNIT_BINS:%=%.run) $(SAN_UNIT_BINS:%=%.san) \
	$(UNIT_BINS:%=%.memcheck)

# make install [DESTDIR=...] [PREFIX=/usr/local]: the daemon in sbin,
# acmectl in bin, the man pages, acmectl's bash completion, the njs reader,
# the systemd unit (its paths follow PREFIX), the example configuration
# (kept when one is there) and, when it was built, the nginx module in
# nginx's own modules folder with Debian's modules-available snippet and
# its modules-enabled link.  Paths that are nginx's or the system's do not
# follow PREFIX: nginx looks for modules where it was built to.
PREFIX		?= /usr/local
SBINDIR		 = $(PREFIX)/sbin
BINDIR		 = $(PREFIX)/bin
MANDIR		 = $(PREFIX)/share/man
DATADIR		 = $(PREFIX)/share/acme-sidecar
BASHCOMPDIR	 = $(PREFIX)/share/bash-completion/completions
UNITDIR		?= $(PREFIX)/lib/systemd/system
SYSCONFDIR	?= /etc
NGINX_MODULES	?= /usr/lib/nginx/modules
NGINX_AVAILABLE	?= /usr/share/nginx/modules-available
NGINX_ENABLED	?= $(SYSCONFDIR)/nginx/modules-enabled
MODULE_SO	 = ngx_http_acme_module.so
MODULE_CONF	 = mod-http-acme.conf

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(DATADIR) $(DESTDIR)$(BASHCOMPDIR) \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/acme-sidecar
	install -m 0755 $(BUILD)/acme-sidecar $(DESTDIR)$(SBINDIR)/
	install -m 0755 $(BUILD)/acmectl $(DESTDIR)$(BINDIR)/
	install -m 0644 man/acme-sidecar.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/acme-sidecar.8 man/acmectl.8 \
	    $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 conf/acmectl.bash-completion \
	    $(DESTDIR)$(BASHCOMPDIR)/acmectl
	install -m 0644 src/njs/acme.js $(DESTDIR)$(DATADIR)/
	sed 's|/usr/local/sbin/|$(SBINDIR)/|g; s|/etc/acme-sidecar/|$(SYSCONFDIR)/acme-sidecar/|g' \
	    conf/acme-sidecar.service >$(DESTDIR)$(UNITDIR)/acme-sidecar.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/acme-sidecar.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/acme-sidecar/acme-sidecar.conf ] || \
	    install -m 0644 conf/acme-sidecar.conf \
	    $(DESTDIR)$(SYSCONFDIR)/acme-sidecar/
	if [ -f $(BUILD)/$(MODULE_SO) ]; then \
	    install -d $(DESTDIR)$(NGINX_MODULES) \
		$(DESTDIR)$(NGINX_AVAILABLE) $(DESTDIR)$(NGINX_ENABLED) && \
	    install -m 0644 $(BUILD)/$(MODULE_SO) $(DESTDIR)$(NGINX_MODULES)/ && \
	    echo "load_module $(NGINX_MODULES)/$(MODULE_SO);" \
		>$(DESTDIR)$(NGINX_AVAILABLE)/$(MODULE_CONF) && \
	    chmod 0644 $(DESTDIR)$(NGINX_AVAILABLE)/$(MODULE_CONF) && \
	    ln -sf $(NGINX_AVAILABLE)/$(MODULE_CONF) \
		$(DESTDIR)$(NGINX_ENABLED)/50-$(MODULE_CONF); \
	fi

# What install put there, but the configuration, which may be edited.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/acme-sidecar $(DESTDIR)$(BINDIR)/acmectl \
	    $(DESTDIR)$(MANDIR)/man5/acme-sidecar.conf.5 \
	    $(DESTDIR)$(MANDIR)/man8/acme-sidecar.8 \
	    $(DESTDIR)$(MANDIR)/man8/acmectl.8 \
	    $(DESTDIR)$(BASHCOMPDIR)/acmectl $(DESTDIR)$(DATADIR)/acme.js \
	    $(DESTDIR)$(UNITDIR)/acme-sidecar.service \
	    $(DESTDIR)$(NGINX_ENABLED)/50-$(MODULE_CONF) \
	    $(DESTDIR)$(NGINX_AVAILABLE)/$(MODULE_CONF) \
	    $(DESTDIR)$(NGINX_MODULES)/$(MODULE_SO)
	-rmdir $(DESTDIR)$(DATADIR)

.PHONY: install uninstall
