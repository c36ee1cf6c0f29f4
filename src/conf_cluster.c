/*
 * The "cluster" directive: several replicas sharing one state in Redis.
 *
 *   cluster redis://HOST:PORT[/DB] | unix:/PATH[?db=DB]
 *           | sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]
 *           [password_file=FILE] [prefix=NAME] [secret_file=FILE]
 *           [node=NAME];
 *
 * Everything is checked here, at start, at reload and with -t: the
 * address, both files (read now, so a missing or empty one is a FILE:LINE
 * error), the names.  The secret is never kept: only the sealing key
 * derived from it (cluster_seal.c), and the buffers that held it are
 * wiped.
 */
#include <sys/stat.h>

#include <arpa/inet.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar.h"
#include "conf_int.h"

#define CONF_CLUSTER_PREFIX	"acme-sidecar"
#define CONF_CLUSTER_PORT	6379
#define CONF_CLUSTER_SENTINEL_PORT 26379

void
conf_cluster_free(struct conf_cluster *cl)
{
	int	 i;

	if (cl == NULL)
		return;
	free(cl->cl_url);
	free(cl->cl_host);
	free(cl->cl_unix);
	free(cl->cl_master);
	for (i = 0; i < cl->cl_nsentinels; i++)
		free(cl->cl_sentinel_hosts[i]);
	free(cl->cl_user);
	if (cl->cl_password != NULL) {
		explicit_bzero(cl->cl_password, strlen(cl->cl_password));
		free(cl->cl_password);
	}
	free(cl->cl_prefix);
	free(cl->cl_node);
	free(cl->cl_file);
	explicit_bzero(cl->cl_key, sizeof(cl->cl_key));
	free(cl);
}

/* Node names and prefixes go into Redis keys: keep them plain. */
static int
conf_cluster_name_ok(const char *s)
{
	size_t	 len = strlen(s);

	return len > 0 && len <= CLUSTER_NAME_MAX &&
	    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789._-") == len;
}

static int
conf_cluster_port(const char *s, int *port)
{
	long long	 v;

	if (conf_number(s, 1, 65535, &v) == -1)
		return -1;
	*port = (int)v;
	return 0;
}

/* HOST[:PORT], HOST may be [IPv6]: of url, for the errors. */
static int
conf_cluster_hostport(struct conf_parse *p, const char *url,
    const char *hostport, char **host, int *port)
{
	const char	*end, *colon;

	if (strchr(hostport, '@') != NULL)
		return conf_error(p, "\"%s\" of the \"cluster\" directive: give "
		    "the password in password_file=, not in the URL", url);
	if (hostport[0] == '[') {
		if ((end = strchr(hostport, ']')) == NULL ||
		    (end[1] != ':' && end[1] != '\0'))
			goto badhost;
		*host = xstrndup(hostport + 1, (size_t)(end - hostport - 1));
		colon = end[1] == ':' ? end + 1 : NULL;
	} else {
		colon = strchr(hostport, ':');
		*host = colon != NULL ? xstrndup(hostport,
		    (size_t)(colon - hostport)) : xstrdup(hostport);
	}
	if ((*host)[0] == '\0' || strspn(*host, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") != strlen(*host))
		goto badhost;
	if (colon != NULL && conf_cluster_port(colon + 1, port) == -1)
		return conf_error(p, "invalid port in \"%s\" of the \"cluster\" "
		    "directive", url);
	return 0;
badhost:
	return conf_error(p, "invalid host in \"%s\" of the \"cluster\" "
	    "directive", url);
}

/* /DB at the end of url, if any: cut off from s (which is a copy). */
static int
conf_cluster_db(struct conf_parse *p, struct conf_cluster *cl,
    const char *url, char *s)
{
	char		*slash;
	long long	 v;

	if ((slash = strrchr(s, '/')) == NULL)
		return 0;
	if (conf_number(slash + 1, 0, CLUSTER_DB_MAX, &v) == -1)
		return conf_error(p, "invalid database in \"%s\" of the "
		    "\"cluster\" directive (0 to %d)", url, CLUSTER_DB_MAX);
	cl->cl_db = (int)v;
	*slash = '\0';
	return 0;
}

/* redis://HOST[:PORT][/DB] */
static int
conf_cluster_tcp(struct conf_parse *p, struct conf_cluster *cl,
    const char *url)
{
	char	*s = xstrdup(url + strlen("redis://"));
	int	 rc;

	cl->cl_port = CONF_CLUSTER_PORT;
	rc = conf_cluster_db(p, cl, url, s);
	if (rc == 0)
		rc = conf_cluster_hostport(p, url, s, &cl->cl_host,
		    &cl->cl_port);
	free(s);
	return rc;
}

/*
 * sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]: Redis Sentinel
 * tells where the master named MASTER is (cluster.c asks at each connect).
 */
static int
conf_cluster_sentinel(struct conf_parse *p, struct conf_cluster *cl,
    const char *url)
{
	char	*s = xstrdup(url + strlen("sentinel://")), *master, *list;
	char	*one, *last = NULL;
	int	 rc = -1;

	if ((master = strchr(s, '/')) == NULL) {
		conf_error(p, "\"%s\" of the \"cluster\" directive names no "
		    "master: sentinel://HOST[:PORT][,...]/MASTER[/DB]", url);
		goto out;
	}
	*master++ = '\0';
	list = s;
	if (strchr(master, '/') != NULL &&
	    conf_cluster_db(p, cl, url, master) == -1)
		goto out;
	if (!conf_cluster_name_ok(master)) {
		conf_error(p, "invalid master name in \"%s\" of the \"cluster\" "
		    "directive", url);
		goto out;
	}
	cl->cl_master = xstrdup(master);
	for (one = strtok_r(list, ",", &last); one != NULL;
	    one = strtok_r(NULL, ",", &last)) {
		if (cl->cl_nsentinels == CLUSTER_SENTINELS_MAX) {
			conf_error(p, "more than %d sentinels in \"%s\" of the "
			    "\"cluster\" directive", CLUSTER_SENTINELS_MAX, url);
			goto out;
		}
		cl->cl_sentinel_ports[cl->cl_nsentinels] =
		    CONF_CLUSTER_SENTINEL_PORT;
		if (conf_cluster_hostport(p, url, one,
		    &cl->cl_sentinel_hosts[cl->cl_nsentinels],
		    &cl->cl_sentinel_ports[cl->cl_nsentinels]) == -1) {
			cl->cl_nsentinels++;	/* freed with cl */
			goto out;
		}
		cl->cl_nsentinels++;
	}
	if (cl->cl_nsentinels == 0) {
		conf_error(p, "\"%s\" of the \"cluster\" directive names no "
		    "sentinel", url);
		goto out;
	}
	rc = 0;
out:
	free(s);
	return rc;
}

/* unix:/PATH[?db=DB] */
static int
conf_cluster_unix(struct conf_parse *p, struct conf_cluster *cl,
    const char *url)
{
	const char	*path = url + strlen("unix:"), *q;
	long long	 v;

	if ((q = strstr(path, "?db=")) != NULL) {
		if (conf_number(q + 4, 0, CLUSTER_DB_MAX, &v) == -1)
			return conf_error(p, "invalid database in \"%s\" of the "
			    "\"cluster\" directive (0 to %d)", url,
			    CLUSTER_DB_MAX);
		cl->cl_db = (int)v;
	} else
		q = path + strlen(path);
	if (path[0] != '/' || q - path >= (ptrdiff_t)CLUSTER_UNIX_PATH_MAX)
		return conf_error(p, "invalid socket path in \"%s\" of the "
		    "\"cluster\" directive: an absolute path of at most %d "
		    "bytes", url, CLUSTER_UNIX_PATH_MAX - 1);
	cl->cl_unix = xstrndup(path, (size_t)(q - path));
	return 0;
}

/* A small secret file: read whole, trimmed of the newline around it. */
static int
conf_cluster_read_secret(struct conf_parse *p, const char *param,
    const char *file, char **text, size_t *len)
{
	char	*path, *buf = NULL, *msg = NULL, *s;
	size_t	 n = 0;
	int	 rc = -1;

	path = conf_path_resolve(p->lex, file);
	if (conf_read_file(path, &buf, &n, &msg) == -1) {
		conf_error(p, "%s: %s", param, msg);
		goto out;
	}
	s = buf + strspn(buf, " \t\r\n");
	n = strlen(s);
	while (n > 0 && strchr(" \t\r\n", s[n - 1]) != NULL)
		n--;
	if (n == 0) {
		conf_error(p, "%s: \"%s\" is empty", param, path);
		goto out;
	}
	*text = xstrndup(s, n);
	*len = n;
	rc = 0;
out:
	if (buf != NULL) {
		explicit_bzero(buf, strlen(buf));
		free(buf);
	}
	free(msg);
	free(path);
	return rc;
}

/* "PASSWORD" or "USER PASSWORD", Redis' AUTH in both forms. */
static int
conf_cluster_password(struct conf_parse *p, struct conf_cluster *cl,
    const char *file)
{
	char	*text = NULL, *sp;
	size_t	 len;

	if (conf_cluster_read_secret(p, "password_file", file, &text,
	    &len) == -1)
		return -1;
	if (strchr(text, '\n') != NULL || strchr(text, '\r') != NULL) {
		explicit_bzero(text, len);
		free(text);
		return conf_error(p, "password_file: one line is expected: "
		    "PASSWORD, or USER PASSWORD");
	}
	if ((sp = strchr(text, ' ')) != NULL) {
		cl->cl_user = xstrndup(text, (size_t)(sp - text));
		cl->cl_password = xstrdup(sp + 1 + strspn(sp + 1, " "));
	} else
		cl->cl_password = xstrdup(text);
	explicit_bzero(text, len);
	free(text);
	if (cl->cl_password[0] == '\0')
		return conf_error(p, "password_file: no password after the "
		    "user name");
	return 0;
}

static int
conf_cluster_secret(struct conf_parse *p, struct conf_cluster *cl,
    const char *file)
{
	char	*text = NULL;
	size_t	 len;
	int	 rc = -1;

	if (conf_cluster_read_secret(p, "secret_file", file, &text, &len) ==
	    -1)
		return -1;
	if (len < CLUSTER_SECRET_MIN) {
		conf_error(p, "secret_file: \"%s\" holds %zu bytes; at least "
		    "%d are needed (head -c 32 /dev/urandom | base64)", file,
		    len, CLUSTER_SECRET_MIN);
		goto out;
	}
	if (cluster_seal_derive(text, len, cl->cl_key) == -1) {
		conf_error(p, "secret_file: deriving the sealing key failed");
		goto out;
	}
	cl->cl_have_key = 1;
	rc = 0;
out:
	explicit_bzero(text, len);
	free(text);
	return rc;
}

enum conf_cluster_param {
	CLUSTER_PARAM_PASSWORD,
	CLUSTER_PARAM_SECRET,
	CLUSTER_PARAM_PREFIX,
	CLUSTER_PARAM_NODE,
	CLUSTER_PARAM_MAX
};
static const char *conf_cluster_params[CLUSTER_PARAM_MAX] = {
	"password_file", "secret_file", "prefix", "node"
};

/* NAME=VALUE: which NAME, or CLUSTER_PARAM_MAX; *value points past '='. */
static enum conf_cluster_param
conf_cluster_param_find(const char *arg, const char **value)
{
	size_t	 i, len;

	for (i = 0; i < CLUSTER_PARAM_MAX; i++) {
		len = strlen(conf_cluster_params[i]);
		if (strncmp(arg, conf_cluster_params[i], len) == 0 &&
		    arg[len] == '=' && arg[len + 1] != '\0') {
			*value = arg + len + 1;
			return (enum conf_cluster_param)i;
		}
	}
	return CLUSTER_PARAM_MAX;
}

static int
conf_cluster_param(struct conf_parse *p, struct conf_cluster *cl,
    const char *arg, unsigned int *seen)
{
	enum conf_cluster_param	 which;
	const char		*v = NULL;

	if ((which = conf_cluster_param_find(arg, &v)) == CLUSTER_PARAM_MAX)
		return conf_error(p, "invalid parameter \"%s\"", arg);
	if (*seen & (1u << which))
		return conf_error(p, "duplicate parameter \"%s\"",
		    conf_cluster_params[which]);
	*seen |= 1u << which;
	switch (which) {
	case CLUSTER_PARAM_PASSWORD:
		return conf_cluster_password(p, cl, v);
	case CLUSTER_PARAM_SECRET:
		return conf_cluster_secret(p, cl, v);
	case CLUSTER_PARAM_PREFIX:
	case CLUSTER_PARAM_NODE:
		if (!conf_cluster_name_ok(v))
			return conf_error(p, "invalid %s \"%s\": 1 to %d "
			    "letters, digits, '.', '_' or '-'",
			    conf_cluster_params[which], v, CLUSTER_NAME_MAX);
		if (which == CLUSTER_PARAM_PREFIX)
			cl->cl_prefix = xstrdup(v);
		else
			cl->cl_node = xstrdup(v);
		return 0;
	case CLUSTER_PARAM_MAX:
		break;
	}
	return -1;
}

/* node= defaults to the host name, which a pod sets to its own name. */
static int
conf_cluster_default_node(struct conf_parse *p, struct conf_cluster *cl)
{
	char	 host[HOST_NAME_MAX + 1];

	if (cl->cl_node != NULL)
		return 0;
	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		return conf_error(p, "the host name is unknown: set node= in "
		    "the \"cluster\" directive");
	host[sizeof(host) - 1] = '\0';
	if (!conf_cluster_name_ok(host))
		return conf_error(p, "the host name \"%s\" cannot name a node: "
		    "set node= in the \"cluster\" directive", host);
	cl->cl_node = xstrdup(host);
	return 0;
}

int
conf_cmd_cluster(struct conf_parse *p, struct conf_block *blk, int argc,
    char **argv)
{
	struct conf_cluster	*cl;
	unsigned int		 seen = 0;
	int			 i;

	(void)blk;
	cl = xcalloc(1, sizeof(*cl));
	cl->cl_url = xstrdup(argv[0]);
	cl->cl_file = xstrdup(p->file);
	cl->cl_line = p->line;
	if (strncmp(argv[0], "redis://", 8) == 0) {
		if (conf_cluster_tcp(p, cl, argv[0]) == -1)
			goto fail;
	} else if (strncmp(argv[0], "unix:", 5) == 0) {
		if (conf_cluster_unix(p, cl, argv[0]) == -1)
			goto fail;
	} else if (strncmp(argv[0], "sentinel://", 11) == 0) {
		if (conf_cluster_sentinel(p, cl, argv[0]) == -1)
			goto fail;
	} else {
		conf_error(p, "invalid address \"%s\" in the \"cluster\" "
		    "directive: redis://HOST:PORT[/DB], unix:/PATH or "
		    "sentinel://HOST:PORT/MASTER", argv[0]);
		goto fail;
	}
	for (i = 1; i < argc; i++) {
		if (conf_cluster_param(p, cl, argv[i], &seen) == -1)
			goto fail;
	}
	if (!cl->cl_have_key) {
		conf_error(p, "\"cluster\" needs secret_file=: private keys "
		    "reach Redis only sealed with it");
		goto fail;
	}
	if (cl->cl_prefix == NULL)
		cl->cl_prefix = xstrdup(CONF_CLUSTER_PREFIX);
	if (conf_cluster_default_node(p, cl) == -1)
		goto fail;
	conf_cluster_free(p->conf->c_cluster);
	p->conf->c_cluster = cl;
	return 0;
fail:
	conf_cluster_free(cl);
	return -1;
}
