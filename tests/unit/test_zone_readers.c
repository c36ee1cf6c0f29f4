/*
 * zone_readers.c: the kernel's permission rule as the sidecar applies it
 * for nginx's workers, and a real file judged for a real user.
 */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sidecar.h"

static struct stat
file(uid_t uid, gid_t gid, mode_t mode)
{
	struct stat	st;

	memset(&st, 0, sizeof(st));
	st.st_uid = uid;
	st.st_gid = gid;
	st.st_mode = S_IFREG | mode;
	return st;
}

/* One class applies, the first that matches: owner, then group, then other. */
static void
test_zone_readers_classes(void **state)
{
	gid_t		gids[] = { 65534, 33 };
	struct stat	st;

	(void)state;
	st = file(0, 33, 0640);			/* root:www-data */
	assert_true(zone_readers_may(&st, 65534, gids, 2, S_IROTH));
	assert_false(zone_readers_may(&st, 65534, gids, 1, S_IROTH));
	st = file(0, 65534, 0640);		/* root:nogroup */
	assert_true(zone_readers_may(&st, 65534, gids, 1, S_IROTH));
	assert_false(zone_readers_may(&st, 65534, gids, 1, S_IXOTH));
	/* The owner without the bit is refused, whatever others may do. */
	st = file(65534, 65534, 0044);
	assert_false(zone_readers_may(&st, 65534, gids, 2, S_IROTH));
	/* A member of the group without its bit likewise. */
	st = file(0, 33, 0604);
	assert_false(zone_readers_may(&st, 1000, gids, 2, S_IROTH));
	assert_true(zone_readers_may(&st, 1000, NULL, 0, S_IROTH));
	/* Root reads anything. */
	st = file(1, 1, 0);
	assert_true(zone_readers_may(&st, 0, NULL, 0, S_IROTH));
}

/*
 * A file 0600 of ours: nobody cannot read it, a folder without search
 * permission shuts them out, and "unknown" when the user is nobody's.
 */
static void
test_zone_readers_check_file(void **state)
{
	char				 dir[] = "/tmp/zone_readers.XXXXXX";
	char				 path[64];
	const struct zone_readers	*zr;
	FILE				*f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/zone", dir);
	assert_non_null(f = fopen(path, "w"));
	fclose(f);

	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(chmod(path, 0644), 0);
	zone_readers_check(path, "nobody", "nogroup", "test");
	zr = zone_readers_get();
	assert_int_equal(zr->zr_state, ZONE_READERS_YES);

	assert_int_equal(chmod(path, 0600), 0);
	zone_readers_check(path, "nobody", "nogroup", "test");
	assert_int_equal(zr->zr_state, ZONE_READERS_NO);
	assert_non_null(strstr(zr->zr_why, "cannot read"));
	assert_non_null(strstr(zr->zr_why, "(mode 0600 "));

	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(chmod(dir, 0750), 0);
	zone_readers_check(path, "nobody", "nogroup", "test");
	assert_int_equal(zr->zr_state, ZONE_READERS_NO);
	assert_non_null(strstr(zr->zr_why, "cannot enter"));

	zone_readers_check(path, "no-such-user-here", NULL, "test");
	assert_int_equal(zr->zr_state, ZONE_READERS_UNKNOWN);
	assert_string_equal(zr->zr_group, "no-such-user-here");

	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zone_readers_classes),
		cmocka_unit_test(test_zone_readers_check_file),
	};

	log_init(0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
