/*
 * Renewal timing and the nonce pool: the pure parts of the scheduler and
 * the issuer engine.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sidecar.h"

#define DAY	(24 * 3600)

static void
test_renew_two_thirds(void **state)
{
	time_t	 nb = 1700000000, na = nb + 90 * DAY;

	(void)state;
	/* Without jitter: exactly 60 days after notBefore. */
	assert_int_equal(order_renew_time(nb, na, 0.0), nb + 60 * DAY);
	/* Full jitter moves it earlier by 1% of the lifetime, capped at 6h. */
	assert_int_equal(order_renew_time(nb, na, 1.0), nb + 60 * DAY - 6 * 3600);
}

static void
test_renew_short_lived_half(void **state)
{
	time_t	 nb = 1700000000, na = nb + 6 * DAY;

	(void)state;
	/* Lifetimes of 10 days or less renew at half. */
	assert_int_equal(order_renew_time(nb, na, 0.0), nb + 3 * DAY);
	assert_int_equal(order_renew_time(nb, nb + 10 * DAY, 0.0), nb + 5 * DAY);
	/* 1% of 6 days is 86 minutes: jitter stays small. */
	assert_int_equal(order_renew_time(nb, na, 1.0), nb + 3 * DAY - 5184);
}

static void
test_renew_just_over_ten_days(void **state)
{
	time_t	 nb = 1700000000, na = nb + 10 * DAY + 3;

	(void)state;
	assert_int_equal(order_renew_time(nb, na, 0.0),
	    nb + (time_t)((double)(na - nb) * 2.0 / 3.0));
}

static void
test_renew_nonsense_dates(void **state)
{
	(void)state;
	/* A certificate that ends before it starts is due at once. */
	assert_int_equal(order_renew_time(2000, 1000, 0.5), 2000);
}

static void
test_nonce_lifo_and_cap(void **state)
{
	struct nonce_pool	*np = nonce_pool_new();
	char			 buf[32], *n;
	int			 i;

	(void)state;
	assert_null(nonce_take(np));
	nonce_put(np, "first");
	nonce_put(np, "second");
	n = nonce_take(np);
	assert_string_equal(n, "second");	/* freshest first */
	free(n);
	n = nonce_take(np);
	assert_string_equal(n, "first");
	free(n);

	/* Overflow drops the oldest. */
	for (i = 0; i < NONCE_POOL_MAX + 10; i++) {
		snprintf(buf, sizeof(buf), "n%d", i);
		nonce_put(np, buf);
	}
	assert_int_equal(nonce_count(np), NONCE_POOL_MAX);
	for (i = NONCE_POOL_MAX + 9; i >= 10; i--) {
		snprintf(buf, sizeof(buf), "n%d", i);
		n = nonce_take(np);
		assert_non_null(n);
		assert_string_equal(n, buf);
		free(n);
	}
	assert_null(nonce_take(np));
	nonce_pool_free(np);
}

static void
test_nonce_rejects_malformed(void **state)
{
	struct nonce_pool	*np = nonce_pool_new();
	char			 big[NONCE_MAX_LEN + 2];

	(void)state;
	nonce_put(np, "");
	nonce_put(np, "has space");
	nonce_put(np, "semi;colon");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	nonce_put(np, big);
	assert_int_equal(nonce_count(np), 0);
	nonce_put(np, "abc-_XYZ09");
	assert_int_equal(nonce_count(np), 1);
	nonce_pool_free(np);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_renew_two_thirds),
		cmocka_unit_test(test_renew_short_lived_half),
		cmocka_unit_test(test_renew_just_over_ten_days),
		cmocka_unit_test(test_renew_nonsense_dates),
		cmocka_unit_test(test_nonce_lifo_and_cap),
		cmocka_unit_test(test_nonce_rejects_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
