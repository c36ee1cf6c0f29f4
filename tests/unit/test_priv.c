/*
 * priv.c: the "user" directive's lookup, the state_path it must own, and
 * the switch itself (in a child, which cannot come back).  Run as root,
 * as make check does; as anyone else the tests that need root skip.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <valgrind/valgrind.h>

#include "sidecar.h"

struct tp {
	char			 dir[64];
	struct priv_user	 pu;
};

static int
tp_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
tp_setup(void **state)
{
	struct tp	*tp;
	char		*cause = NULL;

	tp = xcalloc(1, sizeof(*tp));
	snprintf(tp->dir, sizeof(tp->dir), "/tmp/test_priv.XXXXXX");
	if (mkdtemp(tp->dir) == NULL)
		return -1;
	if (priv_lookup("nobody", NULL, &tp->pu, &cause) == -1) {
		fprintf(stderr, "%s\n", cause);
		return -1;
	}
	*state = tp;
	return 0;
}

static int
tp_teardown(void **state)
{
	struct tp	*tp = *state;

	nftw(tp->dir, tp_rm, 16, FTW_DEPTH | FTW_PHYS);
	priv_user_clear(&tp->pu);
	free(tp);
	return 0;
}

static void
tp_need_root(void)
{
	if (geteuid() != 0)
		skip();
}

static char *
tp_path(const struct tp *tp, const char *rel)
{
	char	*p;

	xasprintf(&p, "%s/%s", tp->dir, rel);
	return p;
}

static void
tp_touch(const char *path, uid_t uid)
{
	int	 fd;

	assert_true((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) != -1);
	assert_int_equal(fchown(fd, uid, (gid_t)-1), 0);
	close(fd);
}

static void
test_lookup(void **state)
{
	struct priv_user	 pu;
	struct passwd		*pw;
	struct group		*gr;
	char			*cause = NULL;

	(void)state;
	assert_non_null(pw = getpwnam("nobody"));
	assert_int_equal(priv_lookup("nobody", NULL, &pu, &cause), 0);
	assert_int_equal(pu.pu_uid, pw->pw_uid);
	assert_int_equal(pu.pu_gid, pw->pw_gid);	/* primary group */
	assert_non_null(gr = getgrgid(pw->pw_gid));
	assert_string_equal(pu.pu_group, gr->gr_name);
	assert_string_equal(pu.pu_user, "nobody");
	priv_user_clear(&pu);

	assert_non_null(gr = getgrnam("root"));
	assert_int_equal(priv_lookup("nobody", "root", &pu, &cause), 0);
	assert_int_equal(pu.pu_gid, gr->gr_gid);
	assert_string_equal(pu.pu_group, "root");
	priv_user_clear(&pu);

	assert_int_equal(priv_lookup("no-such-user-here", NULL, &pu, &cause),
	    -1);
	assert_string_equal(cause, "user \"no-such-user-here\": no such user");
	free(cause);
	assert_int_equal(priv_lookup("nobody", "no-such-group-here", &pu,
	    &cause), -1);
	assert_string_equal(cause, "user \"nobody\": group "
	    "\"no-such-group-here\": no such group");
	assert_null(pu.pu_user);
	free(cause);
}

/* Missing: made for the user, parents root's and passable. */
static void
test_prepare_creates(void **state)
{
	struct tp	*tp = *state;
	struct stat	 st;
	char		*leaf, *mid, *cause = NULL;

	tp_need_root();
	leaf = tp_path(tp, "a/b/issuer");
	mid = tp_path(tp, "a/b");
	assert_int_equal(priv_state_prepare(leaf, &tp->pu, &cause), 0);
	assert_int_equal(lstat(leaf, &st), 0);
	assert_int_equal(st.st_uid, tp->pu.pu_uid);
	assert_int_equal(st.st_gid, tp->pu.pu_gid);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(lstat(mid, &st), 0);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_mode & 0555, 0555);
	assert_int_equal(priv_state_check(leaf, &tp->pu, &cause), 0);
	free(leaf);
	free(mid);
}

/* Existing: never chowned, whoever owns it. */
static void
test_prepare_leaves_existing(void **state)
{
	struct tp	*tp = *state;
	struct stat	 st;
	char		*leaf, *key, *cause = NULL;

	tp_need_root();
	leaf = tp_path(tp, "old");
	key = tp_path(tp, "old/account.key");
	assert_int_equal(mkdir(leaf, 0700), 0);
	tp_touch(key, 0);
	assert_int_equal(priv_state_prepare(leaf, &tp->pu, &cause), 0);
	assert_int_equal(lstat(leaf, &st), 0);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(lstat(key, &st), 0);
	assert_int_equal(st.st_uid, 0);
	free(leaf);
	free(key);
}

/* One file of another owner anywhere below is found and named. */
static void
test_check_finds_foreign(void **state)
{
	struct tp	*tp = *state;
	char		*leaf, *certs, *gen, *key, *link, *cause = NULL, *want;

	tp_need_root();
	leaf = tp_path(tp, "s");
	certs = tp_path(tp, "s/certs");
	gen = tp_path(tp, "s/certs/a@0000000000000001");
	key = tp_path(tp, "s/certs/a@0000000000000001/key.pem");
	link = tp_path(tp, "s/certs/a");
	assert_int_equal(mkdir(leaf, 0700), 0);
	assert_int_equal(mkdir(certs, 0700), 0);
	assert_int_equal(mkdir(gen, 0700), 0);
	assert_int_equal(symlink("a@0000000000000001", link), 0);
	tp_touch(key, tp->pu.pu_uid);
	assert_int_equal(lchown(leaf, tp->pu.pu_uid, (gid_t)-1), 0);
	assert_int_equal(lchown(certs, tp->pu.pu_uid, (gid_t)-1), 0);
	assert_int_equal(lchown(gen, tp->pu.pu_uid, (gid_t)-1), 0);
	assert_int_equal(lchown(link, tp->pu.pu_uid, (gid_t)-1), 0);
	assert_int_equal(priv_state_check(leaf, &tp->pu, &cause), 0);

	/* A root-owned key two levels down. */
	assert_int_equal(chown(key, 0, 0), 0);
	assert_int_equal(priv_state_check(leaf, &tp->pu, &cause), -1);
	xasprintf(&want, "state_path %s: %s belongs to uid 0, not to user "
	    "nobody, who could not update it; run \"chown -R nobody:%s %s\"",
	    leaf, key, tp->pu.pu_group, leaf);
	assert_string_equal(cause, want);
	free(want);
	free(cause);
	assert_int_equal(chown(key, tp->pu.pu_uid, 0), 0);

	/* A root-owned link, not followed: the link itself is judged. */
	assert_int_equal(lchown(link, 0, 0), 0);
	assert_int_equal(priv_state_check(leaf, &tp->pu, &cause), -1);
	assert_non_null(strstr(cause, link));
	free(cause);
	free(leaf);
	free(certs);
	free(gen);
	free(key);
	free(link);
}

/* In a child: the switch is for good, and it must be seen to be. */
static void
test_drop(void **state)
{
	struct tp	*tp = *state;
	char		*cause = NULL;
	pid_t		 pid;
	uid_t		 r, e, s;
	gid_t		 groups[4];
	int		 status;

	tp_need_root();
	/* valgrind's leak check in the child would report the parent's heap. */
	if (RUNNING_ON_VALGRIND)
		skip();
	if ((pid = fork()) == 0) {
		if (priv_drop(&tp->pu, &cause) == -1)
			_exit(10);
		if (getresuid(&r, &e, &s) == -1 || r != tp->pu.pu_uid ||
		    e != tp->pu.pu_uid || s != tp->pu.pu_uid)
			_exit(11);
		if (getgroups(4, groups) != 1 || groups[0] != tp->pu.pu_gid)
			_exit(12);
		if (setuid(0) != -1 || errno != EPERM)
			_exit(13);
		if (access("/etc/shadow", R_OK) != -1)
			_exit(14);
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup),
		cmocka_unit_test_setup_teardown(test_prepare_creates, tp_setup,
		    tp_teardown),
		cmocka_unit_test_setup_teardown(test_prepare_leaves_existing,
		    tp_setup, tp_teardown),
		cmocka_unit_test_setup_teardown(test_check_finds_foreign,
		    tp_setup, tp_teardown),
		cmocka_unit_test_setup_teardown(test_drop, tp_setup,
		    tp_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
