# libFuzzer harnesses (tests/fuzz/README.md), included by the Makefile.
#
#   make fuzz        each harness for FUZZ_TIME seconds
#   make fuzz-check  regressions first, then each for FUZZ_CHECK_TIME,
#                    JOBS harnesses at a time
#
# Every harness runs even when one fails; the target fails if any did.
#
# Everything is built into build/fuzz/ with clang and its sanitizers, apart
# from the normal objects in build/obj: coverage instrumentation must be in
# the daemon's code itself, not only in the harnesses.

FUZZ_CC		?= clang-14
FUZZ_TIME	?= 300
FUZZ_CHECK_TIME	?= 26
FUZZ_SAN	 = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS	 = -g -O1 $(FUZZ_SAN) -std=gnu11 -Wall -Wextra \
		   -Werror=implicit-function-declaration -D_GNU_SOURCE -pthread \
		   $(shell pkg-config --cflags $(PKGS)) -Isrc -Iproto
FUZZ_LDLIBS	 = $(shell pkg-config --libs $(PKGS)) -lm -pthread

FUZZ		 = $(BUILD)/fuzz
FUZZ_NAMES	 = conf control acme challenge cluster shm dns_hook dns
FUZZ_BINS	 = $(FUZZ_NAMES:%=$(FUZZ)/fuzz_%)
FUZZ_OBJS	 = $(filter-out $(FUZZ)/obj/main.o, \
		   $(DAEMON_SRCS:src/%.c=$(FUZZ)/obj/%.o))

# Harnesses that #include a daemon file (to reach its static parsers) are
# linked without that file's object.
FUZZ_WITHOUT_control	 = $(FUZZ)/obj/control.o
FUZZ_WITHOUT_challenge	 = $(FUZZ)/obj/challenge.o
FUZZ_WITHOUT_acme	 = $(FUZZ)/obj/acme.o $(FUZZ)/obj/order.o
FUZZ_WITHOUT_dns_hook	 = $(FUZZ)/obj/dns_hook.o
FUZZ_WITHOUT_dns	 = $(FUZZ)/obj/dns_update.o
# The configuration harness sees only files in its own folder.
FUZZ_LDFLAGS_conf	 = -Wl,--wrap=open,--wrap=glob
# The cluster harness gives the records its own sealing key and node name.
FUZZ_LDFLAGS_cluster	 = -Wl,--wrap=cluster_key,--wrap=cluster_node

$(FUZZ)/obj/%.o: src/%.c src/sidecar.h proto/acme_shm.h proto/acme_ident.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ)/obj/order.o $(FUZZ)/obj/order_cluster.o $(FUZZ)/obj/order_ari.o \
$(FUZZ)/obj/order_dns.o: src/order.h
$(FUZZ)/obj/conf.o $(FUZZ)/obj/conf_cert.o $(FUZZ)/obj/conf_cluster.o \
$(FUZZ)/obj/conf_lex.o $(FUZZ)/obj/conf_load.o $(FUZZ)/obj/conf_parse.o \
$(FUZZ)/obj/nginx_conf.o: src/conf_int.h

$(FUZZ)/fuzz_conf $(FUZZ)/fuzz_control $(FUZZ)/fuzz_acme \
$(FUZZ)/fuzz_challenge $(FUZZ)/fuzz_cluster $(FUZZ)/fuzz_dns_hook \
$(FUZZ)/fuzz_dns: \
    $(FUZZ)/fuzz_%: tests/fuzz/fuzz_%.c \
    tests/fuzz/fuzz.h tests/fuzz/fuzz_mhd.h $(FUZZ_OBJS) $(wildcard src/*.c) \
    src/sidecar.h src/order.h proto/acme_shm.h proto/acme_ident.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_LDFLAGS_$*) -o $@ \
	    $< $(filter-out $(FUZZ_WITHOUT_$*),$(FUZZ_OBJS)) $(FUZZ_LDLIBS)

# The nginx module's segment reader, compiled with nginx's own headers as
# scripts/build-nginx-module configures them (build/nginx-src/objs).
FUZZ_NGX	 = $(BUILD)/nginx-src
FUZZ_NGX_INC	 = -I$(FUZZ_NGX)/src/core -I$(FUZZ_NGX)/src/event \
		   -I$(FUZZ_NGX)/src/event/modules -I$(FUZZ_NGX)/src/os/unix \
		   -I$(FUZZ_NGX)/src/http -I$(FUZZ_NGX)/src/http/modules \
		   -I$(FUZZ_NGX)/src/http/v2 -I$(FUZZ_NGX)/objs -Isrc/nginx

$(FUZZ)/fuzz_shm: tests/fuzz/fuzz_shm.c src/nginx/ngx_http_acme_shm.c \
    src/nginx/ngx_http_acme_module.h proto/acme_shm.h module
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -g -O1 $(FUZZ_SAN) -fsanitize=fuzzer -Wall -Wextra \
	    -D_GNU_SOURCE $(FUZZ_NGX_INC) -Iproto -o $@ $<

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@rc=0; for n in $(FUZZ_NAMES); do \
	    tests/fuzz/run $(BUILD) $$n $(FUZZ_TIME) || rc=1; done; exit $$rc

# Built JOBS objects at a time, then the harnesses run JOBS at a time,
# each for FUZZ_CHECK_TIME.  A harness is one process with its own corpus
# and artifact folders (tests/fuzz/run), so they can share the machine;
# two side by side on 2 cores each ran 76% of the inputs it ran alone in
# 20 s (conf 53,316 against 70,250, control 210,098 against 274,407), so
# each runs 26 s instead of 20: as many inputs as one after the other,
# in 104 s of wall time instead of 160.  -k: every harness runs even
# when one fails; -O: each one's output whole.
FUZZ_CHECK_RUNS	 = $(FUZZ_NAMES:%=fuzz-check-%)

fuzz-check:
	@$(MAKE) --no-print-directory -j$(JOBS) fuzz-build
	@$(MAKE) --no-print-directory -k -j$(JOBS) -O $(FUZZ_CHECK_RUNS)

$(FUZZ_CHECK_RUNS): fuzz-check-%:
	@tests/fuzz/run $(BUILD) $* $(FUZZ_CHECK_TIME)

.PHONY: fuzz fuzz-build fuzz-check $(FUZZ_CHECK_RUNS)
