/*
 * GET /v1/certificates writes each certificate's line by hand
 * (control_cert_line()); GET /v1/certificates/{id} and the changes build
 * a jansson tree (control_cert_info_json()).  Both must say the same, byte
 * for byte as jansson writes the tree without indenting: here for
 * certificates drawn at random over every field, and for the strings and
 * times that take the slow ways.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "sidecar.h"
#include "control.h"
#include "textbuf.h"

/* Strings a certificate's fields may hold, the awkward ones included. */
static const char *const words[] = {
	"n1.example.test", "*.example.test", "xn--bcher-kva.example",
	"pebble", "say \"hi\"", "back\\slash", "tab\tand\nnewline",
	"ctl\x01\x1f", "del\x7f", "caf\xc3\xa9 \xe2\x82\xac",
	"not utf-8 \xff\xfe", "a/b", "", "https://ca.test/docs#ari",
	"cmT80hnUvfK1n8p1uq7cwaQVen4.CnJWE-2L6U0"
};
#define NWORDS	(sizeof(words) / sizeof(words[0]))

/* Times that matter: never, leap days, ends of years, far futures. */
static const time_t times[] = {
	0, 1, 59, 86399, 86400, 951782400, 951868799, 951868800,
	1709164800, 1735689599, 1798675200, 4102444800LL, 253402300799LL,
	253402300800LL, -1, -86401
};
#define NTIMES	(sizeof(times) / sizeof(times[0]))

static const char *
pick_word(int null_too)
{
	if (null_too && rand() % 3 == 0)
		return NULL;
	return words[rand() % NWORDS];
}

static time_t
pick_time(void)
{
	switch (rand() % 3) {
	case 0:
		return times[rand() % NTIMES];
	case 1:
		return 0;
	default:
		/* Anywhere from 1970 to about 2106. */
		return (time_t)((unsigned long long)rand() * 2 +
		    (unsigned)rand() % 2);
	}
}

static void
random_info(struct order_info *oi, const char **idents)
{
	size_t	 i;

	memset(oi, 0, sizeof(*oi));
	oi->oi_id = pick_word(0);
	oi->oi_nidents = (size_t)rand() % 4;
	for (i = 0; i < oi->oi_nidents; i++)
		idents[i] = pick_word(0);
	oi->oi_idents = (char *const *)idents;
	oi->oi_issuer = pick_word(0);
	oi->oi_key = (enum key_type)(rand() % KEY_TYPE_MAX);
	oi->oi_state = (enum order_state)(rand() % ORDER_STATE_MAX);
	oi->oi_not_before = pick_time();
	oi->oi_not_after = pick_time();
	oi->oi_renew_at = pick_time();
	oi->oi_renew_ari = rand() % 2;
	oi->oi_ari_start = pick_time();
	oi->oi_ari_end = pick_time();
	oi->oi_ari_next_fetch = pick_time();
	oi->oi_ari_explanation = pick_word(1);
	oi->oi_cert_id = pick_word(1);
	oi->oi_profile = pick_word(1);
	oi->oi_retry_at = pick_time();
	oi->oi_failures = rand() % 3 == 0 ? rand() : rand() % 10;
	oi->oi_last_error = pick_word(1);
	oi->oi_last_error_at = pick_time();
}

/* What the tree says; NULL when jansson cannot hold a string as UTF-8. */
static char *
tree_text(const struct order_info *oi, int valid, enum challenge_type ch)
{
	json_t	*j;
	char	*text;

	j = control_cert_info_json(oi, valid, ch);
	text = json_dumps(j, JSON_PRESERVE_ORDER);
	json_decref(j);
	return text;
}

static int
is_utf8(const char *s)
{
	json_t	*j;

	if (s == NULL)
		return 1;
	if ((j = json_string(s)) == NULL)
		return 0;
	json_decref(j);
	return 1;
}

static int
all_utf8(const struct order_info *oi)
{
	size_t	 i;

	for (i = 0; i < oi->oi_nidents; i++)
		if (!is_utf8(oi->oi_idents[i]))
			return 0;
	return is_utf8(oi->oi_id) && is_utf8(oi->oi_issuer) &&
	    is_utf8(oi->oi_ari_explanation) && is_utf8(oi->oi_cert_id) &&
	    is_utf8(oi->oi_profile) && is_utf8(oi->oi_last_error);
}

static void
test_line_is_tree(void **state)
{
	struct order_info	 oi;
	struct textbuf		 tb = { NULL, 0, 0 };
	const char		*idents[4];
	char			*want;
	int			 i, valid, compared = 0;
	enum challenge_type	 ch;

	(void)state;
	srand(20261206);
	for (i = 0; i < 20000; i++) {
		random_info(&oi, idents);
		valid = rand() % 2;
		ch = (enum challenge_type)(rand() % CHALLENGE_TYPE_MAX);
		if (!all_utf8(&oi))
			continue;
		tb.tb_len = 0;
		control_cert_line(&tb, &oi, valid, ch);
		assert_int_equal(strlen(tb.tb_buf), tb.tb_len);
		assert_non_null(want = tree_text(&oi, valid, ch));
		assert_string_equal(tb.tb_buf, want);
		free(want);
		compared++;
	}
	assert_true(compared > 1000);
	free(tb.tb_buf);
}

/* Bytes that are not UTF-8 become '?', the line stays JSON. */
static void
test_line_not_utf8(void **state)
{
	struct order_info	 oi;
	struct textbuf		 tb = { NULL, 0, 0 };
	const char		*ident = "bad\xff\xc3";
	json_t			*j;
	json_error_t		 err;

	(void)state;
	memset(&oi, 0, sizeof(oi));
	oi.oi_id = "x";
	oi.oi_issuer = "pebble";
	oi.oi_idents = (char *const *)&ident;
	oi.oi_nidents = 1;
	oi.oi_last_error = "caf\xe9";
	control_cert_line(&tb, &oi, 0, CHALLENGE_HTTP_01);
	assert_non_null(j = json_loads(tb.tb_buf, 0, &err));
	assert_string_equal(json_string_value(json_array_get(
	    json_object_get(j, "identifiers"), 0)), "bad??");
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(j, "last_error"), "message")), "caf?");
	json_decref(j);
	free(tb.tb_buf);
}

/* The hand-written dates against gmtime_r() for every day to 2400. */
static void
test_line_dates(void **state)
{
	struct order_info	 oi;
	struct textbuf		 tb = { NULL, 0, 0 };
	char			 want[UTIL_TIME_LEN + 40];
	time_t			 t;

	(void)state;
	memset(&oi, 0, sizeof(oi));
	oi.oi_id = "x";
	oi.oi_issuer = "y";
	for (t = 43210; t < 13569465600LL; t += 86400 + 7) {
		oi.oi_not_before = t;
		tb.tb_len = 0;
		control_cert_line(&tb, &oi, 0, CHALLENGE_HTTP_01);
		strcpy(want, "\"not_before\": \"");
		util_time_rfc3339(t, want + strlen(want), UTIL_TIME_LEN);
		strcat(want, "\"");
		if (strstr(tb.tb_buf, want) == NULL)
			fail_msg("%lld: %s has no %s", (long long)t, tb.tb_buf,
			    want);
	}
	free(tb.tb_buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_is_tree),
		cmocka_unit_test(test_line_not_utf8),
		cmocka_unit_test(test_line_dates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
