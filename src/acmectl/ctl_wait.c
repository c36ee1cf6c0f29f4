/*
 * acmectl: waiting for orders.
 *
 * Commands that start an order (add, renew) then poll the certificate
 * until the order ends, and show its progress on stderr; stdout keeps
 * the result alone, for scripts.
 */
#include <sys/types.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ctl.h"

/* Poll every 250 ms, until the order ends or --timeout passes. */
#define CTL_POLL_MS		250

static void
ctl_sleep_ms(long ms)
{
	struct timespec	ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static const char *
ctl_wait_state(const struct ctl_wait *w)
{
	const char	*s;

	s = json_string_value(json_object_get(w->w_cert, "state"));
	return s != NULL ? s : "?";
}

/*
 * Start waiting for the order of the certificate the API answered with
 * (201 of add, 202 of renew).  A renewal is over when the certificate is
 * idle again after an order, or holds another certificate than before:
 * an answer that came before the order left idle must not end it.
 */
int
ctl_wait_init(struct ctl_wait *w, json_t *ce, int renewal, char **cause)
{
	const char	*id, *nb;

	memset(w, 0, sizeof(*w));
	if ((id = json_string_value(json_object_get(ce, "id"))) == NULL) {
		*cause = ctl_xasprintf("the answer names no certificate id");
		return -1;
	}
	w->w_id = ctl_xstrdup(id);
	w->w_path = ctl_cert_path(id, "");
	w->w_cert = json_incref(ce);
	nb = json_string_value(json_object_get(ce, "not_before"));
	w->w_before = nb != NULL ? ctl_xstrdup(nb) : NULL;
	/* An added certificate is done once idle: it may reuse one. */
	w->w_busy = !renewal;
	return 0;
}

void
ctl_wait_free(struct ctl_wait *w)
{
	free(w->w_id);
	free(w->w_path);
	free(w->w_before);
	json_decref(w->w_cert);
}

/* Whether the order ended, and how, from the latest state. */
static void
ctl_wait_check(struct ctl_wait *w)
{
	const char	*state = ctl_wait_state(w), *nb;
	int		 changed;

	if (strcmp(state, "backoff") == 0) {
		w->w_done = -1;
		return;
	}
	if (strcmp(state, "idle") != 0) {
		w->w_busy = 1;
		return;
	}
	nb = json_string_value(json_object_get(w->w_cert, "not_before"));
	changed = nb != NULL && (w->w_before == NULL ||
	    strcmp(nb, w->w_before) != 0);
	if (!w->w_busy && !changed)
		return;
	w->w_done = json_is_true(json_object_get(w->w_cert, "valid")) ? 1 :
	    -1;
}

/* Why an order failed: the daemon's last error, as show prints it. */
char *
ctl_wait_error(const struct ctl_wait *w)
{
	const char	*msg;

	msg = json_string_value(json_object_get(json_object_get(w->w_cert,
	    "last_error"), "message"));
	if (strcmp(ctl_wait_state(w), "idle") == 0)
		return ctl_xasprintf("%s: the order ended without a valid "
		    "certificate", w->w_id);
	return ctl_xasprintf("%s: the order failed: %s", w->w_id,
	    msg != NULL ? msg : "(no error given)");
}

/* Poll once; with progress, a changed state is shown on stderr. */
static int
ctl_wait_poll(const struct ctl_opts *o, struct ctl_wait *w, int progress,
    char **cause)
{
	json_t	*j;
	char	*old;

	if (ctl_call(o->o_socket, "GET", w->w_path, NULL, &j, cause) == -1)
		return -1;
	old = ctl_xstrdup(ctl_wait_state(w));
	json_decref(w->w_cert);
	w->w_cert = j;
	if (progress && strcmp(old, ctl_wait_state(w)) != 0)
		fprintf(stderr, "%s: %s\n", w->w_id, ctl_wait_state(w));
	free(old);
	ctl_wait_check(w);
	return 0;
}

static size_t
ctl_wait_count(const struct ctl_wait *ws, size_t n)
{
	size_t	i, done = 0;

	for (i = 0; i < n; i++) {
		if (ws[i].w_done != 0)
			done++;
	}
	return done;
}

/*
 * Wait until every order in ws ended or the timeout passed.  Progress
 * on stderr is each state of the orders, or with counts, how many of
 * them are done.  An order that failed is not an error here: the caller
 * reads w_done.
 */
int
ctl_wait_run(const struct ctl_opts *o, struct ctl_wait *ws, size_t n,
    int counts, char **cause)
{
	long long	 deadline = ctl_now_ms() + o->o_timeout * 1000LL;
	size_t		 i, done, shown = SIZE_MAX;

	for (i = 0; i < n; i++) {
		if (!counts)
			fprintf(stderr, "%s: %s\n", ws[i].w_id,
			    ctl_wait_state(&ws[i]));
		ctl_wait_check(&ws[i]);
	}
	for (;;) {
		done = ctl_wait_count(ws, n);
		if (counts && done != shown) {
			fprintf(stderr, "renewing: %zu of %zu done\n", done, n);
			shown = done;
		}
		if (done == n)
			return 0;
		if (ctl_now_ms() >= deadline)
			break;
		ctl_sleep_ms(CTL_POLL_MS);
		for (i = 0; i < n; i++) {
			if (ws[i].w_done == 0 &&
			    ctl_wait_poll(o, &ws[i], !counts, cause) == -1)
				return -1;
		}
	}
	/* The orders go on in the daemon; only acmectl stops waiting. */
	if (n == 1)
		*cause = ctl_xasprintf("%s: still %s after %d seconds; the "
		    "order goes on, see acmectl show %s", ws[0].w_id,
		    ctl_wait_state(&ws[0]), o->o_timeout, ws[0].w_id);
	else
		*cause = ctl_xasprintf("%zu of %zu renewals still under way "
		    "after %d seconds; they go on, see acmectl list",
		    n - done, n, o->o_timeout);
	return -1;
}

/* Wait for one order and print the certificate it left. */
int
ctl_wait_one(const struct ctl_opts *o, json_t *ce, int renewal,
    char **cause)
{
	struct ctl_wait	w;
	int		rc = -1;

	if (ctl_wait_init(&w, ce, renewal, cause) == -1)
		return -1;
	if (ctl_wait_run(o, &w, 1, 0, cause) == -1)
		goto out;
	if (w.w_done == -1) {
		*cause = ctl_wait_error(&w);
		goto out;
	}
	ctl_output_cert(o, w.w_cert);
	rc = 0;
out:
	ctl_wait_free(&w);
	return rc;
}
