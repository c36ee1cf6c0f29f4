/*
 * Folders and files that another local user cannot hand us.
 *
 * The daemon runs as root or as the "user" of its configuration, and it
 * keeps private keys in its folders.  A folder that someone else owns, or
 * may write to, is theirs: they can swap a file or plant a symbolic link
 * in it between two of our calls.  So a folder is opened one component at
 * a time, each with O_NOFOLLOW, and each is checked through its own
 * descriptor (fstat), never again by path:
 *
 *  - it belongs to root or to the daemon's own user;
 *  - a parent written by its group or others should have the sticky bit
 *    (/tmp): then nobody else can rename or remove what we put there, and
 *    whatever they create first is checked in turn.  One without it is
 *    warned about, once, not refused: a pod's emptyDir volume is 0777,
 *    and its writers are the pod's own containers;
 *  - the folder itself has no group or other write bit that the mode we
 *    would give it lacks;
 *  - a symbolic link is followed only when root or the daemon's user made
 *    it (/var/run -> /run), as the kernel's fs.protected_symlinks does in
 *    sticky folders; its target is then checked like any folder.
 *
 * A folder we create is given its owner and mode with fchown and fchmod on
 * that descriptor.
 *
 * Files: a FIFO opened for reading blocks until a writer comes, and a
 * device may do anything when opened, so a file is opened with O_NONBLOCK
 * (and O_NOCTTY), refused by fstat unless it is a regular file, and only
 * then made blocking again.  A stat() first spares the open altogether in
 * the ordinary case.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar.h"

#define FSAFE_WARNED_MAX	16	/* folders warned about, at most */

#define FSAFE_DIR_FLAGS	(O_RDONLY | O_DIRECTORY | O_CLOEXEC)
#define FSAFE_WHO_LEN	128		/* "user NAME (uid N)" */

/* What kind of file mode says, for messages: "a FIFO". */
const char *
fsafe_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "a regular file";
	case S_IFDIR:
		return "a folder";
	case S_IFLNK:
		return "a symbolic link";
	case S_IFIFO:
		return "a FIFO";
	case S_IFSOCK:
		return "a socket";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	}
	return "a file of unknown type";
}

/* "user nobody (uid 65534)", or "uid 1234" for a uid with no name. */
static void
fsafe_who(uid_t uid, char *buf, size_t len)
{
	struct passwd	 pw, *res = NULL;
	char		 pwbuf[1024];

	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 &&
	    res != NULL)
		snprintf(buf, len, "user %s (uid %u)", res->pw_name,
		    (unsigned)uid);
	else
		snprintf(buf, len, "uid %u", (unsigned)uid);
}

static int
fsafe_owner_ok(uid_t owner, uid_t uid)
{
	return owner == 0 || owner == uid;
}

/* The one message for a folder that is not ours: its owner and mode. */
static int
fsafe_refuse(const char *path, int plen, const struct stat *sb, uid_t uid,
    const char *why, char **cause)
{
	char	 who[FSAFE_WHO_LEN], may[FSAFE_WHO_LEN];

	fsafe_who(sb->st_uid, who, sizeof(who));
	fsafe_who(uid, may, sizeof(may));
	if (why == NULL)
		xasprintf(cause, "%.*s: %s owned by %s, mode %04o: only root%s%s "
		    "may own it", plen, path, S_ISLNK(sb->st_mode) ?
		    "symbolic link" : "folder", who,
		    (unsigned)(sb->st_mode & 07777), uid == 0 ? "" : " or ",
		    uid == 0 ? "" : may);
	else
		xasprintf(cause, "%.*s: folder owned by %s, mode %04o: %s",
		    plen, path, who, (unsigned)(sb->st_mode & 07777), why);
	errno = EPERM;
	return -1;
}

/*
 * A parent others may write to, without the sticky bit: said once per
 * folder (the checks run at each load), for the FSAFE_WARNED_MAX first.
 */
static void
fsafe_warn_open(const char *path, int plen, const struct stat *sb)
{
	static struct {
		dev_t	 dev;
		ino_t	 ino;
	}		 warned[FSAFE_WARNED_MAX];
	static size_t	 nwarned;
	size_t		 i;

	for (i = 0; i < nwarned; i++)
		if (warned[i].dev == sb->st_dev && warned[i].ino == sb->st_ino)
			return;
	if (nwarned == FSAFE_WARNED_MAX)
		return;
	warned[nwarned].dev = sb->st_dev;
	warned[nwarned].ino = sb->st_ino;
	nwarned++;
	log_warnx("%.*s: mode %04o: others than its owner may write to this "
	    "folder, and it has no sticky bit; right for a pod's volume, not "
	    "on a shared host", plen, path, (unsigned)(sb->st_mode & 07777));
}

/*
 * Judge one folder by its descriptor.  last: the folder asked for, held
 * to mode; else a parent, which may be a sticky /tmp.
 */
static int
fsafe_judge(int fd, const char *path, int plen, int last, mode_t mode,
    uid_t uid, char **cause)
{
	struct stat	 sb;
	mode_t		 w;

	if (fstat(fd, &sb) == -1) {
		xasprintf(cause, "%.*s: %s", plen, path, strerror(errno));
		return -1;
	}
	if (!fsafe_owner_ok(sb.st_uid, uid))
		return fsafe_refuse(path, plen, &sb, uid, NULL, cause);
	w = sb.st_mode & (S_IWGRP | S_IWOTH);
	if (last && (w & ~mode) != 0)
		return fsafe_refuse(path, plen, &sb, uid, "others than its "
		    "owner may write to it", cause);
	if (!last && w != 0 && !(sb.st_mode & S_ISVTX))
		fsafe_warn_open(path, plen, &sb);
	return 0;
}

/*
 * Open name under dfd as a folder; 1 when it is missing (errno ENOENT).
 * A link is followed only if root or uid made it.
 */
static int
fsafe_open_step(int dfd, const char *name, const char *path, int plen,
    uid_t uid, int *fdp, char **cause)
{
	struct stat	 sb;
	int		 fd;

	*fdp = -1;
	if ((fd = openat(dfd, name, FSAFE_DIR_FLAGS | O_NOFOLLOW)) != -1) {
		*fdp = fd;
		return 0;
	}
	if (errno == ENOENT)
		return 1;
	if (errno != ELOOP && errno != ENOTDIR) {
		xasprintf(cause, "%.*s: %s", plen, path, strerror(errno));
		return -1;
	}
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == -1) {
		xasprintf(cause, "%.*s: %s", plen, path, strerror(errno));
		return -1;
	}
	if (!S_ISLNK(sb.st_mode)) {
		xasprintf(cause, "%.*s: not a directory but %s", plen, path,
		    fsafe_type(sb.st_mode));
		errno = ENOTDIR;
		return -1;
	}
	if (!fsafe_owner_ok(sb.st_uid, uid))
		return fsafe_refuse(path, plen, &sb, uid, NULL, cause);
	if ((fd = openat(dfd, name, FSAFE_DIR_FLAGS)) == -1) {
		if (errno == ENOENT)
			return 1;
		xasprintf(cause, "%.*s: %s", plen, path, strerror(errno));
		return -1;
	}
	*fdp = fd;
	return 0;
}

/*
 * Create name under dfd and open it.  Its owner and mode are set through
 * the descriptor: mkdir's mode went through the umask.  0: created, 1:
 * someone else did meanwhile (judged as found), -1: error.
 */
static int
fsafe_create_step(int dfd, const char *name, const char *path, int plen,
    int last, mode_t mode, uid_t uid, gid_t gid, int *fdp, char **cause)
{
	mode_t	 m = last ? mode : FSAFE_PARENT_MODE;
	int	 fd;

	*fdp = -1;
	if (mkdirat(dfd, name, m) == -1) {
		if (errno == EEXIST)
			return 1;
		xasprintf(cause, "mkdir %.*s: %s", plen, path, strerror(errno));
		return -1;
	}
	if ((fd = openat(dfd, name, FSAFE_DIR_FLAGS | O_NOFOLLOW)) == -1) {
		xasprintf(cause, "%.*s: %s", plen, path, strerror(errno));
		return -1;
	}
	/* A parent stays its creator's: root's, or the user's own. */
	if (last && ((uid != (uid_t)-1 && uid != geteuid()) ||
	    gid != (gid_t)-1) && fchown(fd, uid, gid) == -1) {
		xasprintf(cause, "chown %.*s: %s", plen, path, strerror(errno));
		close(fd);
		return -1;
	}
	if (fchmod(fd, m) == -1) {
		xasprintf(cause, "chmod %.*s: %s", plen, path, strerror(errno));
		close(fd);
		return -1;
	}
	*fdp = fd;
	return 0;
}

/*
 * The walk behind fsafe_mkdir() and fsafe_opendir().  uid: the daemon's
 * user, whose folders (with root's) are trusted; gid: the group a created
 * folder gets, or -1.
 */
static int
fsafe_walk(const char *path, mode_t mode, uid_t uid, gid_t gid, int create,
    char **cause)
{
	const char	*p, *end;
	char		*name = NULL;
	int		 dfd, fd = -1, r, last, plen;
	uid_t		 trust;

	if (*path == '\0') {
		xasprintf(cause, "empty path");
		errno = EINVAL;
		return -1;
	}
	trust = uid != (uid_t)-1 ? uid : geteuid();
	/* Where the walk starts is trusted: "/", or the working folder. */
	if ((dfd = open(*path == '/' ? "/" : ".", FSAFE_DIR_FLAGS)) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return -1;
	}
	for (p = path; *p != '\0'; p = end) {
		while (*p == '/')
			p++;
		end = p + strcspn(p, "/");
		if (end == p || (end - p == 1 && *p == '.'))
			continue;
		last = end[strspn(end, "/")] == '\0';
		plen = (int)(end - path);
		free(name);
		name = xstrndup(p, (size_t)(end - p));
		r = fsafe_open_step(dfd, name, path, plen, trust, &fd, cause);
		if (r == 1 && create) {
			r = fsafe_create_step(dfd, name, path, plen, last, mode,
			    uid, gid, &fd, cause);
			if (r == 1)	/* a race: judge whoever made it */
				r = fsafe_open_step(dfd, name, path, plen,
				    trust, &fd, cause);
		}
		if (r == 1) {
			xasprintf(cause, "%.*s: %s", plen, path,
			    strerror(ENOENT));
			errno = ENOENT;
		}
		if (r == 0 && fsafe_judge(fd, path, plen, last, mode, trust,
		    cause) == -1)
			r = -1;
		close(dfd);
		dfd = fd;
		fd = -1;
		if (r != 0) {
			if (dfd != -1)
				close(dfd);
			free(name);
			return -1;
		}
	}
	free(name);
	return dfd;
}

int
fsafe_mkdir(const char *path, mode_t mode, uid_t uid, gid_t gid,
    char **cause)
{
	return fsafe_walk(path, mode, uid, gid, 1, cause);
}

int
fsafe_opendir(const char *path, mode_t mode, uid_t uid, char **cause)
{
	return fsafe_walk(path, mode, uid, (gid_t)-1, 0, cause);
}

/* open() of dir/name failed: say so, errno kept. */
static int
fsafe_open_failed(const char *dir, const char *name, char **cause)
{
	int	 e = errno;

	xasprintf(cause, "%s%s%s: %s", dir != NULL ? dir : "",
	    dir != NULL ? "/" : "", name, strerror(e));
	errno = e;
	return -1;
}

int
fsafe_open_regular(const char *path, int flags, struct stat *sb,
    char **cause)
{
	return fsafe_openat_regular(AT_FDCWD, NULL, path, flags, sb, cause);
}

/*
 * A start reads three files of each certificate: relative to the folder
 * already judged, the kernel walks two components of each path instead
 * of all of state_path's, and nothing above dfd can be swapped meanwhile.
 */
int
fsafe_openat_regular(int dfd, const char *dir, const char *name, int flags,
    struct stat *sb, char **cause)
{
	struct stat	 st;
	int		 fd, e;

	memset(sb, 0, sizeof(*sb));
	/* Spare a FIFO or a device the open itself when we can. */
	if (fstatat(dfd, name, &st, 0) == -1) {
		/*
		 * Nothing there: open() would say the same, following links
		 * as stat() does.  A start looks for each certificate's
		 * pending order, there only while one is under way.
		 */
		if (errno == ENOENT && !(flags & O_NOFOLLOW))
			return fsafe_open_failed(dir, name, cause);
	} else if (!S_ISREG(st.st_mode)) {
		*sb = st;
		goto notreg;
	}
	if ((fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY |
	    O_CLOEXEC | flags)) == -1)
		return fsafe_open_failed(dir, name, cause);
	if (fstat(fd, &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		*sb = st;
		goto notreg;
	}
	/*
	 * Blocking again.  The status flags are those of the open(), so
	 * they need no F_GETFL: a syscall less for each file a start reads
	 * (three per certificate).  A caller that asked for O_NONBLOCK
	 * keeps it and spares the F_SETFL too: it changes nothing for a
	 * regular file's reads.
	 */
	if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags) == -1)
		goto fail;
	*sb = st;
	return fd;
fail:
	e = errno;
	close(fd);
	errno = e;
	return fsafe_open_failed(dir, name, cause);
notreg:
	xasprintf(cause, "%s%s%s: not a regular file but %s",
	    dir != NULL ? dir : "", dir != NULL ? "/" : "", name,
	    fsafe_type(sb->st_mode));
	errno = EINVAL;
	return -1;
}
