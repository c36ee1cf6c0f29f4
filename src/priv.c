/*
 * Least privilege: the "user NAME [GROUP]" directive.
 *
 * The daemon starts as root because port 80, the shared zone's group and
 * the control socket's owner need it.  Once those are bound and opened,
 * it becomes NAME for good, in steps (httpd's proc.c): the supplementary
 * groups, then the group, then the user, real, effective and saved alike,
 * and it checks that root cannot be had back.  Nothing it holds open
 * needs root afterwards: an open descriptor and a mapping keep the access
 * they were opened with.
 *
 * From then on everything it reads or writes is done as NAME, so each
 * issuer's state_path must belong to NAME.  A missing one is created for
 * NAME while still root; an existing one is never chowned (a state_path
 * pointed at the wrong folder would hand that folder to NAME): it is
 * checked after the drop, and a file NAME does not own stops the daemon
 * with the command that fixes it.
 */
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <linux/capability.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar.h"

#define PRIV_WALK_FDS	16		/* descriptors nftw() may hold */

/* nftw() takes no argument: what the walk looks for, and what it found. */
static uid_t	 priv_walk_uid;
static char	*priv_walk_bad;		/* first path not ours */
static uid_t	 priv_walk_bad_uid;
static int	 priv_walk_errno;	/* or why it could not be read */

/* NAME and GROUP to ids.  GROUP NULL: NAME's primary group. */
int
priv_lookup(const char *user, const char *group, struct priv_user *pu,
    char **cause)
{
	struct passwd	*pw;
	struct group	*gr;

	memset(pu, 0, sizeof(*pu));
	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		xasprintf(cause, "user \"%s\": %s", user, errno != 0 ?
		    strerror(errno) : "no such user");
		return -1;
	}
	pu->pu_uid = pw->pw_uid;
	pu->pu_gid = pw->pw_gid;
	pu->pu_user = xstrdup(user);
	if (group != NULL) {
		errno = 0;
		if ((gr = getgrnam(group)) == NULL) {
			xasprintf(cause, "user \"%s\": group \"%s\": %s", user,
			    group, errno != 0 ? strerror(errno) :
			    "no such group");
			priv_user_clear(pu);
			return -1;
		}
		pu->pu_gid = gr->gr_gid;
		pu->pu_group = xstrdup(group);
	} else if ((gr = getgrgid(pw->pw_gid)) != NULL)
		pu->pu_group = xstrdup(gr->gr_name);
	else
		xasprintf(&pu->pu_group, "%u", (unsigned)pw->pw_gid);
	return 0;
}

void
priv_user_clear(struct priv_user *pu)
{
	free(pu->pu_user);
	free(pu->pu_group);
	memset(pu, 0, sizeof(*pu));
}

/*
 * As root, before the drop: create a missing state_path for the user.
 * Missing parents are root's and 0755 so the user can pass through; the
 * folder itself is the user's, 0700, as store_init() would make it.
 */
int
priv_state_prepare(const char *dir, const struct priv_user *pu, char **cause)
{
	struct stat	 st;
	int		 fd;

	if (lstat(dir, &st) == 0 || errno != ENOENT)
		return 0;	/* priv_state_check() judges it after */
	/*
	 * Through descriptors (fsafe.c): a folder another user makes in the
	 * meantime, or a link planted in the path, is refused, not adopted.
	 */
	if ((fd = fsafe_mkdir(dir, 0700, pu->pu_uid, pu->pu_gid, cause)) == -1)
		return -1;
	close(fd);
	log_info("state_path %s: created for user %s", dir, pu->pu_user);
	return 0;
}

/* Whether the process could still act as root or use a capability. */
static int
priv_caps_left(void)
{
	struct __user_cap_header_struct	hdr;
	struct __user_cap_data_struct	data[_LINUX_CAPABILITY_U32S_3];
	int				i;

	memset(&hdr, 0, sizeof(hdr));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	if (syscall(SYS_capget, &hdr, data) == -1)
		fatal("capget");
	for (i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
		if (data[i].permitted != 0 || data[i].effective != 0)
			return 1;
	}
	return 0;
}

/*
 * What the drop must have left: every id the user's, one group, and no
 * way back.  A way back is a broken invariant, not a recoverable error.
 */
static int
priv_verify(const struct priv_user *pu, char **cause)
{
	uid_t	 ruid, euid, suid;
	gid_t	 rgid, egid, sgid, groups[2];

	if (getresuid(&ruid, &euid, &suid) == -1 ||
	    getresgid(&rgid, &egid, &sgid) == -1) {
		xasprintf(cause, "getresuid: %s", strerror(errno));
		return -1;
	}
	if (ruid != pu->pu_uid || euid != pu->pu_uid || suid != pu->pu_uid ||
	    (uid_t)setfsuid((uid_t)-1) != pu->pu_uid ||
	    rgid != pu->pu_gid || egid != pu->pu_gid || sgid != pu->pu_gid ||
	    (gid_t)setfsgid((gid_t)-1) != pu->pu_gid) {
		xasprintf(cause, "ids are uid %u/%u/%u gid %u/%u/%u after "
		    "the switch", (unsigned)ruid, (unsigned)euid,
		    (unsigned)suid, (unsigned)rgid, (unsigned)egid,
		    (unsigned)sgid);
		return -1;
	}
	if (getgroups(2, groups) != 1 || groups[0] != pu->pu_gid) {
		xasprintf(cause, "supplementary groups other than %u are left",
		    (unsigned)pu->pu_gid);
		return -1;
	}
	if (pu->pu_uid == 0)
		return 0;	/* "user root": nothing to lose */
	if (setuid(0) != -1 || setresuid(0, 0, 0) != -1 || seteuid(0) != -1 ||
	    setgid(0) != -1 || setgroups(0, NULL) != -1 || priv_caps_left())
		fatalx("user %s: root privileges can be regained after the "
		    "switch", pu->pu_user);
	return 0;
}

/*
 * Become the user for good.  No thread is running yet (main.c starts the
 * writer after this), and glibc applies set*id() to every thread anyway.
 */
int
priv_drop(const struct priv_user *pu, char **cause)
{
	if (setgroups(1, &pu->pu_gid) == -1) {
		xasprintf(cause, "setgroups: %s", strerror(errno));
		return -1;
	}
	if (setresgid(pu->pu_gid, pu->pu_gid, pu->pu_gid) == -1) {
		xasprintf(cause, "setresgid %u: %s", (unsigned)pu->pu_gid,
		    strerror(errno));
		return -1;
	}
	if (setresuid(pu->pu_uid, pu->pu_uid, pu->pu_uid) == -1) {
		xasprintf(cause, "setresuid %u: %s", (unsigned)pu->pu_uid,
		    strerror(errno));
		return -1;
	}
	return priv_verify(pu, cause);
}

static int
priv_walk_one(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	(void)ftw;
	/* The writer thread may remove an old generation during the walk. */
	if ((flag == FTW_NS || flag == FTW_DNR) && errno == ENOENT)
		return 0;
	if (flag == FTW_NS) {
		priv_walk_bad = xstrdup(path);
		priv_walk_errno = errno != 0 ? errno : EACCES;
		return 1;
	}
	if (st->st_uid != priv_walk_uid) {
		priv_walk_bad = xstrdup(path);
		priv_walk_bad_uid = st->st_uid;
		return 1;
	}
	if (flag == FTW_DNR) {		/* ours, yet mode 0 or so */
		priv_walk_bad = xstrdup(path);
		priv_walk_errno = EACCES;
		return 1;
	}
	return 0;
}

/*
 * After the drop: the state_path and everything in it are the user's, so
 * every later save, rename and removal works.  Links are not followed.
 */
int
priv_state_check(const char *dir, const struct priv_user *pu, char **cause)
{
	char	*real = NULL;
	int	 r, rc = -1;

	/* A state_path that is itself a link is walked where it points. */
	if ((real = realpath(dir, NULL)) == NULL) {
		xasprintf(cause, "state_path %s: %s", dir, strerror(errno));
		return -1;
	}
	priv_walk_uid = pu->pu_uid;
	priv_walk_bad = NULL;
	priv_walk_errno = 0;
	r = nftw(real, priv_walk_one, PRIV_WALK_FDS, FTW_PHYS);
	if (r == -1) {
		xasprintf(cause, "state_path %s: %s", dir, strerror(errno));
		goto out;
	}
	if (priv_walk_bad != NULL && priv_walk_errno != 0) {
		xasprintf(cause, "state_path %s: %s: %s as user %s; run "
		    "\"chown -R %s:%s %s\"", dir, priv_walk_bad,
		    strerror(priv_walk_errno), pu->pu_user, pu->pu_user,
		    pu->pu_group, real);
		goto out;
	}
	if (priv_walk_bad != NULL) {
		xasprintf(cause, "state_path %s: %s belongs to uid %u, not to "
		    "user %s, who could not update it; run \"chown -R %s:%s "
		    "%s\"", dir, priv_walk_bad, (unsigned)priv_walk_bad_uid,
		    pu->pu_user, pu->pu_user, pu->pu_group, real);
		goto out;
	}
	rc = 0;
out:
	free(priv_walk_bad);
	priv_walk_bad = NULL;
	free(real);
	return rc;
}

/* After the drop: a file the daemon reads later, e.g. account_key. */
int
priv_readable(const char *what, const char *path, const struct priv_user *pu,
    char **cause)
{
	if (access(path, R_OK) == 0)
		return 0;
	xasprintf(cause, "%s %s: %s as user %s", what, path, strerror(errno),
	    pu->pu_user);
	return -1;
}
