/*
 * ARI (RFC 9773), the pure parts of ari.c: times, renewalInfo answers,
 * the Retry-After clamp, the pick inside the window, the kept state and
 * the CertID.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sidecar.h"

static void
test_ari_time(void **state)
{
	time_t	 t;

	(void)state;
	assert_int_equal(ari_parse_time("2025-01-02T03:04:05Z", &t), 0);
	assert_int_equal(t, 1735787045);
	/* Go's nanoseconds, and an offset: the same instant. */
	assert_int_equal(ari_parse_time("2025-01-02T04:04:05.999999999+01:00",
	    &t), 0);
	assert_int_equal(t, 1735787045);
	assert_int_equal(ari_parse_time("2025-01-02 03:04:05Z", &t), -1);
	assert_int_equal(ari_parse_time("2025-13-02T03:04:05Z", &t), -1);
	assert_int_equal(ari_parse_time("2025-01-02T03:04:05", &t), -1);
	assert_int_equal(ari_parse_time("2025-01-02T03:04:05Zjunk", &t), -1);
	assert_int_equal(ari_parse_time("", &t), -1);
}

static void
test_ari_parse(void **state)
{
	struct ari_state	 as;
	char			*cause = NULL;
	const char		*ok = "{\"suggestedWindow\":{\"start\":"
	    "\"2025-01-02T00:00:00Z\",\"end\":\"2025-01-03T00:00:00Z\"},"
	    "\"explanationURL\":\"https://ca.example/x\"}";
	const char		*backwards = "{\"suggestedWindow\":{\"start\":"
	    "\"2025-01-03T00:00:00Z\",\"end\":\"2025-01-02T00:00:00Z\"}}";

	(void)state;
	memset(&as, 0, sizeof(as));
	assert_int_equal(ari_parse(ok, strlen(ok), &as, &cause), 0);
	assert_int_equal(as.as_end - as.as_start, 86400);
	assert_string_equal(as.as_explanation, "https://ca.example/x");
	assert_int_equal(ari_parse(backwards, strlen(backwards), &as, &cause),
	    -1);
	assert_non_null(strstr(cause, "ends before"));
	free(cause);
	cause = NULL;
	assert_int_equal(ari_parse("[]", 2, &as, &cause), -1);
	free(cause);
	ari_state_clear(&as);
}

static void
test_ari_clamp_and_pick(void **state)
{
	struct ari_state	 as;
	time_t			 now = 1700000000;

	(void)state;
	assert_int_equal(ari_next_fetch(now, 0), now + ARI_RETRY_DEFAULT);
	assert_int_equal(ari_next_fetch(now, now + 1), now + ARI_RETRY_MIN);
	assert_int_equal(ari_next_fetch(now, now + 90 * 86400),
	    now + ARI_RETRY_MAX);
	memset(&as, 0, sizeof(as));
	as.as_start = now;
	as.as_end = now + 1000;
	assert_int_equal(ari_pick(&as, 0, now, 0.0), now);
	assert_int_equal(ari_pick(&as, 0, now, 0.5), now + 500);
	/* Cut at the certificate's expiry. */
	assert_int_equal(ari_pick(&as, now + 100, now, 0.99), now + 99);
	/* Begun already: only the part still ahead, never the past. */
	assert_int_equal(ari_pick(&as, 0, now + 600, 0.0), now + 600);
	assert_int_equal(ari_pick(&as, 0, now + 600, 0.5), now + 800);
	/* Past altogether: its end, which the caller reads as "now". */
	assert_int_equal(ari_pick(&as, 0, now + 5000, 0.5), now + 1000);
}

static void
test_ari_state_roundtrip(void **state)
{
	struct ari_state	 as, back;
	char			*text, *cause = NULL;

	(void)state;
	memset(&as, 0, sizeof(as));
	memset(&back, 0, sizeof(back));
	as.as_cert_id = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE";
	as.as_start = 1;
	as.as_end = 2;
	as.as_renew_at = 2;
	as.as_next_fetch = 3;
	text = ari_state_json(&as);
	assert_int_equal(ari_state_parse(text, strlen(text), &back, &cause), 0);
	assert_string_equal(back.as_cert_id, as.as_cert_id);
	assert_int_equal(back.as_next_fetch, 3);
	assert_null(back.as_explanation);
	free(text);
	assert_int_equal(ari_state_parse("{\"cert_id\":\"a/b\",\"start\":1,"
	    "\"end\":2,\"renew_at\":2,\"next_fetch\":3}", 60, &back, &cause),
	    -1);
	free(cause);
	ari_state_clear(&back);
}

/* The example of RFC 9773 section 4.1, as a certificate. */
static void
test_ari_cert_id(void **state)
{
	FILE	*p;
	char	 pem[4096], *id, *cause = NULL;
	size_t	 n;

	(void)state;
	p = popen("openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj /CN=x "
	    "-set_serial 0x87654321 -addext "
	    "authorityKeyIdentifier=keyid:always 2>/dev/null", "r");
	assert_non_null(p);
	n = fread(pem, 1, sizeof(pem) - 1, p);
	pclose(p);
	pem[n] = '\0';
	if (n == 0)
		skip();
	assert_non_null(id = ari_cert_id(pem, &cause));
	/* The serial's high bit is set: DER adds a 0x00, "AIdlQyE". */
	assert_non_null(strstr(id, ".AIdlQyE"));
	assert_null(strchr(id, '='));
	free(id);
	assert_null(ari_cert_id("not pem", &cause));
	free(cause);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ari_time),
		cmocka_unit_test(test_ari_parse),
		cmocka_unit_test(test_ari_clamp_and_pick),
		cmocka_unit_test(test_ari_state_roundtrip),
		cmocka_unit_test(test_ari_cert_id),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
