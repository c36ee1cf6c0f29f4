/*
 * The writer thread: certificates queued from the loop land on disk, each
 * callback runs once on the loop, a cancelled job never calls back, and
 * stopping finishes what was queued.
 */
#include <sys/stat.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sidecar.h"
#include "test_util.h"

#define JOBS	40

struct tw {
	char			 dir[64];
	struct event_base	*base;
	int			 calls[JOBS];
	int			 failed;
	int			 outstanding;
};

static struct tw	*tw_current;

static void
tw_done(int rc, const char *cause, void *arg)
{
	int	 i = (int)(intptr_t)arg;

	if (rc != 0) {
		fprintf(stderr, "job %d: %s\n", i, cause);
		tw_current->failed++;
	}
	tw_current->calls[i]++;
	tw_current->outstanding--;
}

static struct writer_job *
tw_queue(struct tw *tw, int i, const char *id)
{
	struct cert_meta	 meta;
	struct writer_job	*wj;
	EVP_PKEY		*key;
	char			*pem, *ident = (char *)id;

	assert_non_null(key = EVP_EC_gen("P-256"));
	pem = tu_self_signed(key, time(NULL), time(NULL) + 86400, id);
	memset(&meta, 0, sizeof(meta));
	meta.cm_idents = &ident;
	meta.cm_nidents = 1;
	meta.cm_key = KEY_ECDSA_256;
	wj = writer_save_cert(tw->dir, id, pem, key, &meta, tw_done,
	    (void *)(intptr_t)i);
	/* The job holds its own copies and its own key reference. */
	free(pem);
	EVP_PKEY_free(key);
	return wj;
}

static void
test_writer_saves_and_calls_back(void **state)
{
	struct tw		 tw;
	struct writer_job	*cancelled;
	char			*cause = NULL, id[96], *chain;
	struct cert_meta	 got;
	EVP_PKEY		*key;
	int			 i;

	(void)state;
	memset(&tw, 0, sizeof(tw));
	tw_current = &tw;
	snprintf(tw.dir, sizeof(tw.dir), "/tmp/test_writer.XXXXXX");
	assert_non_null(mkdtemp(tw.dir));
	assert_int_equal(store_init(tw.dir, &cause), 0);
	assert_non_null(tw.base = event_base_new());
	assert_int_equal(writer_start(tw.base, &cause), 0);

	for (i = 0; i < JOBS; i++) {
		snprintf(id, sizeof(id), "w%d.example.test", i);
		tw.outstanding++;
		if (i == JOBS - 1) {
			/* Queued behind 39 writes: still pending when cancelled. */
			cancelled = tw_queue(&tw, i, id);
			writer_cancel(cancelled);
			tw.outstanding--;
		} else
			tw_queue(&tw, i, id);
	}
	while (tw.outstanding > 0)
		assert_int_not_equal(event_base_loop(tw.base, EVLOOP_ONCE), -1);

	assert_int_equal(tw.failed, 0);
	for (i = 0; i < JOBS - 1; i++) {
		assert_int_equal(tw.calls[i], 1);
		snprintf(id, sizeof(id), "w%d.example.test", i);
		memset(&got, 0, sizeof(got));
		assert_int_equal(store_load_cert(tw.dir, id, &chain, &key,
		    &got, &cause), 0);
		assert_string_equal(got.cm_idents[0], id);
		free(chain);
		EVP_PKEY_free(key);
		store_meta_clear(&got);
	}
	assert_int_equal(tw.calls[JOBS - 1], 0);

	/* A cancelled job calls nobody back, but its certificate is kept. */
	memset(&got, 0, sizeof(got));

	/* A job queued right before stop is still written. */
	tw_queue(&tw, 0, "last.example.test");
	writer_stop();
	assert_int_equal(tw.calls[0], 1);	/* no callback after stop */
	memset(&got, 0, sizeof(got));
	assert_int_equal(store_load_cert(tw.dir, "last.example.test", &chain,
	    &key, &got, &cause), 0);
	free(chain);
	EVP_PKEY_free(key);
	store_meta_clear(&got);
	snprintf(id, sizeof(id), "w%d.example.test", JOBS - 1);
	assert_int_equal(store_load_cert(tw.dir, id, &chain, &key, &got,
	    &cause), 0);
	free(chain);
	EVP_PKEY_free(key);
	store_meta_clear(&got);

	event_base_free(tw.base);
	snprintf(id, sizeof(id), "rm -rf %s", tw.dir);
	assert_int_equal(system(id), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writer_saves_and_calls_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
