/*
 * zone_readers.c: can nginx's workers open the shared zone?
 *
 * The workers open the segment read-only once the master has become
 * nginx.conf's "user".  When the file's owner, group and mode keep them
 * out, every handshake fails, and only nginx's error log says why
 * ("open() ... failed (13: Permission denied)").  The sidecar read the same
 * nginx.conf, so it knows who the workers are; at start it judges the file
 * as the kernel will for them: the owner's, group's or others' bits of the
 * file, and search permission on every folder above it.  The verdict goes
 * to the log and to GET /v1/status.
 *
 * Who the workers are is known only when the user is: a sidecar in its own
 * container may not have nginx's users in its passwd file, and then the
 * verdict is "unknown" rather than a guess.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar.h"

#define ZONE_READERS_MAX_GROUPS	256	/* the workers' groups we look at */

static struct zone_readers	 zone_readers;

/* A name or a number: the id, or -1 when the name is nobody's. */
static long
zone_readers_gid(const char *group)
{
	struct group	*gr;

	if (group[0] != '\0' && strspn(group, "0123456789") == strlen(group))
		return strtol(group, NULL, 10);
	return (gr = getgrnam(group)) != NULL ? (long)gr->gr_gid : -1;
}

/*
 * May a process of uid, in the groups gids, do "want" (the bits of one
 * class: S_IROTH or S_IXOTH) to st?  Only one class applies, the first
 * that matches, as in the kernel: an owner without the bit is refused even
 * if the group has it.
 */
int
zone_readers_may(const struct stat *st, uid_t uid, const gid_t *gids,
    int ngids, mode_t want)
{
	int	i;

	if (uid == 0)
		return 1;
	if (st->st_uid == uid)
		return (st->st_mode & (want << 6)) != 0;
	for (i = 0; i < ngids; i++)
		if (st->st_gid == gids[i])
			return (st->st_mode & (want << 3)) != 0;
	return (st->st_mode & want) != 0;
}

/* "mode 0640 root:www-data" of st, names where they are known. */
static void
zone_readers_describe(const struct stat *st, char *buf, size_t len)
{
	struct passwd	*pw = getpwuid(st->st_uid);
	struct group	*gr = getgrgid(st->st_gid);
	char		 u[32], g[32];

	snprintf(u, sizeof(u), "%u", (unsigned)st->st_uid);
	snprintf(g, sizeof(g), "%u", (unsigned)st->st_gid);
	snprintf(buf, len, "mode %04o %s:%s", (unsigned)(st->st_mode & 07777),
	    pw != NULL ? pw->pw_name : u, gr != NULL ? gr->gr_name : g);
}

/*
 * Search permission on each folder of path, then read permission on the
 * file.  0 when the workers can open it, else -1 with why set.
 */
static int
zone_readers_walk(const char *path, uid_t uid, const gid_t *gids, int ngids,
    char *why, size_t len)
{
	char		 dir[PATH_MAX], mode[96];
	struct stat	 st;
	const char	*slash;

	for (slash = strchr(path + 1, '/'); slash != NULL;
	    slash = strchr(slash + 1, '/')) {
		if ((size_t)(slash - path) >= sizeof(dir))
			break;
		memcpy(dir, path, slash - path);
		dir[slash - path] = '\0';
		if (stat(dir, &st) == -1)
			continue;	/* the open reports it */
		if (!zone_readers_may(&st, uid, gids, ngids, S_IXOTH)) {
			zone_readers_describe(&st, mode, sizeof(mode));
			snprintf(why, len, "cannot enter %s (%s)", dir, mode);
			return -1;
		}
	}
	if (stat(path, &st) == -1) {
		snprintf(why, len, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!zone_readers_may(&st, uid, gids, ngids, S_IROTH)) {
		zone_readers_describe(&st, mode, sizeof(mode));
		snprintf(why, len, "cannot read %s (%s)", path, mode);
		return -1;
	}
	return 0;
}

/*
 * Judge path for nginx's workers, user and group as nginx.conf says
 * (group NULL: the user's own, as nginx takes it).  Logs a warning when
 * they cannot open it.
 */
void
zone_readers_check(const char *path, const char *user, const char *group,
    const char *source)
{
	struct zone_readers	*zr = &zone_readers;
	struct passwd		*pw;
	gid_t			 gids[ZONE_READERS_MAX_GROUPS];
	int			 ngids = ZONE_READERS_MAX_GROUPS;
	long			 gid;

	memset(zr, 0, sizeof(*zr));
	zr->zr_state = ZONE_READERS_UNKNOWN;
	if (user == NULL)
		return;
	snprintf(zr->zr_user, sizeof(zr->zr_user), "%s", user);
	snprintf(zr->zr_group, sizeof(zr->zr_group), "%s",
	    group != NULL ? group : user);
	snprintf(zr->zr_source, sizeof(zr->zr_source), "%s", source);
	if ((pw = getpwnam(user)) == NULL ||
	    (gid = zone_readers_gid(zr->zr_group)) == -1) {
		log_info("shared zone %s: nginx's workers (%s:%s, %s) are not "
		    "known here; not checked whether they can read it", path,
		    zr->zr_user, zr->zr_group, source);
		return;
	}
	/* nginx gives its workers the user's other groups (initgroups). */
	if (getgrouplist(user, (gid_t)gid, gids, &ngids) == -1)
		ngids = ZONE_READERS_MAX_GROUPS;
	if (zone_readers_walk(path, pw->pw_uid, gids, ngids, zr->zr_why,
	    sizeof(zr->zr_why)) == 0) {
		zr->zr_state = ZONE_READERS_YES;
		return;
	}
	zr->zr_state = ZONE_READERS_NO;
	log_warnx("shared zone %s: nginx's workers (%s:%s, %s) %s: nginx "
	    "will serve no certificate from it (set group= in "
	    "acme_shared_zone, or \"user\" in nginx.conf)", path, zr->zr_user,
	    zr->zr_group, source, zr->zr_why);
}

const struct zone_readers *
zone_readers_get(void)
{
	return &zone_readers;
}
