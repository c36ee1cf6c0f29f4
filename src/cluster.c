/*
 * The link to Redis that replicas share (the "cluster" directive).
 *
 * Two hiredis connections driven by the libevent loop: one for commands,
 * one subscribed to PREFIX:events (a subscribed connection takes no other
 * command).  Both come up together and go down together: the link is up
 * when both have authenticated, selected the database and, for the
 * subscriber, subscribed.
 *
 * Nothing here blocks.  A host name is resolved with evdns before hiredis
 * dials the address (hiredis would call getaddrinfo), and since hiredis
 * 0.14 has no timeouts of its own, a watchdog drops the link when the
 * oldest command has waited CLUSTER_CMD_TIMEOUT: a stopped Redis is then
 * noticed as surely as a closed one.  Every drop reconnects after a
 * backoff, doubling from CLUSTER_BACKOFF_MIN to CLUSTER_BACKOFF_MAX.
 *
 * Membership is a sorted set, PREFIX:members, of node names scored by the
 * time (ms) their last heartbeat expires; a node is live while its score
 * is in the future.  The heartbeat also reads who else is live.
 *
 * Back from a drop, a node is "settling": the nodes it saw before went
 * down with Redis too, and each comes back after its own backoff.  Until
 * they are all live again, or CLUSTER_SETTLE_MAX has passed, a token is
 * not called shared (cluster_sync.c): a node still reconnecting could not
 * find it in Redis when the CA's request reaches it.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "sidecar.h"

enum cluster_link_state {
	LINK_DOWN,		/* waiting to reconnect */
	LINK_SENTINEL,		/* asking a sentinel where the master is */
	LINK_RESOLVING,		/* evdns */
	LINK_CONNECTING,	/* AUTH, SELECT, SUBSCRIBE sent */
	LINK_UP,
	LINK_STATE_MAX
};

static const char *cluster_link_names[LINK_STATE_MAX] = {
	"down", "sentinel", "resolving", "connecting", "up"
};

/* One command in flight on the command connection. */
struct cluster_cmd {
	cluster_reply_cb		 cc_cb;		/* NULL: cancelled */
	void				*cc_arg;
	double				 cc_sent;	/* monotonic */
	TAILQ_ENTRY(cluster_cmd)	 cc_entry;
};
TAILQ_HEAD(cluster_cmds, cluster_cmd);

static struct {
	struct event_base	*base;
	struct evdns_base	*dns;
	const struct conf_cluster *conf;	/* main.c's, for the run */
	const struct cluster_hooks *hooks;
	char			*channel;	/* PREFIX:events */
	char			 key_id[CLUSTER_KEY_ID_LEN + 1];

	enum cluster_link_state	 state;
	redisAsyncContext	*cmd;
	redisAsyncContext	*sub;
	redisAsyncContext	*sentinel;	/* while asking one */
	int			 next_sentinel;	/* which one to ask */
	char			*host;		/* resolving or connected to */
	int			 port;
	int			 cmd_ready;	/* AUTH/SELECT answered */
	int			 sub_ready;	/* SUBSCRIBE answered */
	struct evdns_getaddrinfo_request *resolve;
	char			 addr[INET6_ADDRSTRLEN];
	struct cluster_cmds	 inflight;
	size_t			 ninflight;

	struct event		*retry_ev;	/* reconnect */
	struct event		*tick_ev;	/* watchdog and heartbeat */
	int			 failures;	/* since the link was up */
	double			 connect_started;	/* monotonic */
	time_t			 next_heartbeat;

	char			**members;	/* live, from the heartbeat */
	size_t			 nmembers;
	char			**awaited;	/* live before the drop */
	size_t			 nawaited;
	time_t			 settle_until;	/* or 0 */
	int			 secret_ok;	/* -1 unknown, 0 refused, 1 */
	uint64_t		 connects;
	uint64_t		 drops;
	char			*last_error;
	time_t			 last_error_at;
} cl;

static void	 cluster_connect(void);
static void	 cluster_sentinel_dial(void);
static void	 cluster_drop(const char *, ...) PRINTFLIKE(1, 2);

static void
cluster_set_state(enum cluster_link_state state)
{
	if (state >= LINK_STATE_MAX)
		fatalx("%s: bad link state %d", __func__, state);
	log_debug("cluster: %s -> %s", cluster_link_names[cl.state],
	    cluster_link_names[state]);
	cl.state = state;
}

int
cluster_enabled(void)
{
	return cl.conf != NULL;
}

int
cluster_up(void)
{
	return cl.state == LINK_UP;
}

const char *
cluster_node(void)
{
	return cl.conf != NULL ? cl.conf->cl_node : NULL;
}

const unsigned char *
cluster_key(void)
{
	return cl.conf->cl_key;
}

/* PREFIX:a:b, for the key names of the data model; caller frees. */
char *
cluster_keyname(const char *kind, const char *name)
{
	char	*s;

	if (name != NULL)
		xasprintf(&s, "%s:%s:%s", cl.conf->cl_prefix, kind, name);
	else
		xasprintf(&s, "%s:%s", cl.conf->cl_prefix, kind);
	return s;
}

const char *
cluster_keyname_prefix(void)
{
	return cl.conf->cl_prefix;
}

static void
cluster_error(const char *msg)
{
	free(cl.last_error);
	cl.last_error = xstrdup(msg);
	cl.last_error_at = util_now();
}

/* Commands. */

static void
cluster_cmd_done(redisAsyncContext *ac, void *reply, void *arg)
{
	struct cluster_cmd	*cc = arg;
	const redisReply	*r = reply;

	(void)ac;
	TAILQ_REMOVE(&cl.inflight, cc, cc_entry);
	cl.ninflight--;
	if (cc->cc_cb != NULL)
		cc->cc_cb(r, cc->cc_arg);
	free(cc);
	/* A master that became a replica: ask the sentinels again. */
	if (r != NULL && r->type == REDIS_REPLY_ERROR &&
	    strncmp(r->str, "READONLY", 8) == 0 && ac->data != NULL)
		cluster_drop("%s:%d is a replica now", cl.host, cl.port);
}

/*
 * Send a command; cb gets its reply, or NULL if the link drops first.
 * Returns NULL, and never calls cb, when the link is not up.
 */
struct cluster_cmd *
cluster_command_argv(cluster_reply_cb cb, void *arg, int argc,
    const char **argv, const size_t *lens)
{
	struct cluster_cmd	*cc;

	if (cl.state != LINK_UP)
		return NULL;
	cc = xcalloc(1, sizeof(*cc));
	cc->cc_cb = cb;
	cc->cc_arg = arg;
	cc->cc_sent = util_monotonic();
	if (redisAsyncCommandArgv(cl.cmd, cluster_cmd_done, cc, argc, argv,
	    lens) != REDIS_OK) {
		free(cc);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&cl.inflight, cc, cc_entry);
	cl.ninflight++;
	return cc;
}

/* The same with NUL-terminated arguments, at most CLUSTER_MAX_ARGS. */
struct cluster_cmd *
cluster_command(cluster_reply_cb cb, void *arg, const char *first, ...)
{
	const char	*argv[CLUSTER_MAX_ARGS];
	size_t		 lens[CLUSTER_MAX_ARGS];
	va_list		 ap;
	int		 argc = 0;
	const char	*s;

	va_start(ap, first);
	for (s = first; s != NULL; s = va_arg(ap, const char *)) {
		if (argc == CLUSTER_MAX_ARGS)
			fatalx("%s: too many arguments", __func__);
		argv[argc] = s;
		lens[argc++] = strlen(s);
	}
	va_end(ap);
	return cluster_command_argv(cb, arg, argc, argv, lens);
}

/* The reply will arrive, but nobody is waiting for it any more. */
void
cluster_cancel(struct cluster_cmd *cc)
{
	if (cc != NULL)
		cc->cc_cb = NULL;
}

/* A reply that is an error, or none: described for the log. */
int
cluster_reply_failed(const redisReply *r, const char *what)
{
	char	*msg;

	if (r != NULL && r->type != REDIS_REPLY_ERROR)
		return 0;
	if (r == NULL)
		xasprintf(&msg, "%s: no answer (the link to Redis dropped)",
		    what);
	else
		xasprintf(&msg, "%s: %.*s", what, (int)r->len, r->str);
	log_warnx("cluster: %s", msg);
	cluster_error(msg);
	free(msg);
	return 1;
}

/* The link: up, down, and back. */

static void
cluster_strv_free(char ***vp, size_t *np)
{
	size_t	 i;

	for (i = 0; i < *np; i++)
		free((*vp)[i]);
	free(*vp);
	*vp = NULL;
	*np = 0;
}

static void
cluster_members_clear(void)
{
	cluster_strv_free(&cl.members, &cl.nmembers);
}

/* The link dropped: the other nodes live until now are awaited back. */
static void
cluster_members_await(void)
{
	size_t	 i;

	cluster_strv_free(&cl.awaited, &cl.nawaited);
	cl.settle_until = 0;
	for (i = 0; i < cl.nmembers; i++) {
		if (strcmp(cl.members[i], cl.conf->cl_node) == 0)
			continue;
		if (cl.awaited == NULL)
			cl.awaited = xcalloc(cl.nmembers, sizeof(char *));
		cl.awaited[cl.nawaited++] = xstrdup(cl.members[i]);
	}
}

static void
cluster_settled(const char *why)
{
	if (cl.settle_until != 0)
		log_info("cluster: %s; tokens are shared again", why);
	cluster_strv_free(&cl.awaited, &cl.nawaited);
	cl.settle_until = 0;
}

/* Strike the awaited nodes that are live again. */
static void
cluster_members_returned(void)
{
	size_t	 i, j, left = 0;

	for (i = 0; i < cl.nawaited; i++) {
		for (j = 0; j < cl.nmembers; j++)
			if (strcmp(cl.awaited[i], cl.members[j]) == 0)
				break;
		if (j < cl.nmembers)
			free(cl.awaited[i]);
		else
			cl.awaited[left++] = cl.awaited[i];
	}
	cl.nawaited = left;
	if (left == 0 && cl.awaited != NULL)
		cluster_settled("every node seen before the drop is back");
}

/*
 * While settling, when it ends; otherwise 0.  Nodes not back by then are
 * taken for gone.
 */
time_t
cluster_settle_until(void)
{
	if (cl.settle_until != 0 && util_now() >= cl.settle_until)
		cluster_settled("nodes seen before the drop did not come back "
		    "within the settle time");
	return cl.settle_until;
}

static void
cluster_link_free(redisAsyncContext **acp)
{
	redisAsyncContext	*ac = *acp;

	if (ac == NULL)
		return;
	*acp = NULL;
	ac->data = NULL;
	/* Runs every pending callback with a NULL reply. */
	redisAsyncFree(ac);
}

static void
cluster_retry_later(void)
{
	struct timeval	 tv;
	double		 delay;
	int		 n = cl.failures > 8 ? 8 : cl.failures;

	delay = (double)CLUSTER_BACKOFF_MIN * (double)(1 << n);
	if (delay > CLUSTER_BACKOFF_MAX)
		delay = CLUSTER_BACKOFF_MAX;
	delay = util_jitter(delay, 0.2);
	cl.failures++;
	tv.tv_sec = (time_t)delay;
	tv.tv_usec = (suseconds_t)((delay - (double)tv.tv_sec) * 1e6);
	evtimer_add(cl.retry_ev, &tv);
	log_debug("cluster: reconnecting in %.1fs", delay);
}

static void
cluster_drop(const char *fmt, ...)
{
	va_list		 ap;
	char		*why;
	int		 was_up = cl.state == LINK_UP;

	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) == -1)
		fatal("vasprintf");
	va_end(ap);
	if (was_up || cl.failures == 0)
		log_warnx("cluster: Redis %s: %s; serving what is here, "
		    "no new order until it is back", cl.conf->cl_url, why);
	else
		log_debug("cluster: Redis %s: %s", cl.conf->cl_url, why);
	cluster_error(why);
	free(why);
	if (cl.resolve != NULL) {
		evdns_getaddrinfo_cancel(cl.resolve);
		cl.resolve = NULL;
	}
	cluster_set_state(LINK_DOWN);
	cl.drops += was_up;
	cl.cmd_ready = cl.sub_ready = 0;
	cluster_link_free(&cl.cmd);
	cluster_link_free(&cl.sub);
	cluster_link_free(&cl.sentinel);
	if (was_up)
		cluster_members_await();
	cluster_members_clear();
	if (was_up && cl.hooks != NULL && cl.hooks->ch_down != NULL)
		cl.hooks->ch_down();
	cluster_retry_later();
}

static void
cluster_disconnected(const redisAsyncContext *ac, int status)
{
	(void)status;
	/* Our own redisAsyncFree() cleared data: nothing more to do. */
	if (ac->data == NULL)
		return;
	if (ac == cl.cmd)
		cl.cmd = NULL;
	else if (ac == cl.sub)
		cl.sub = NULL;
	else if (ac == cl.sentinel)
		cl.sentinel = NULL;
	cluster_drop("connection closed%s%s", ac->errstr[0] != '\0' ? ": " :
	    "", ac->errstr);
}

static void
cluster_connected(const redisAsyncContext *ac, int status)
{
	if (status == REDIS_OK || ac->data == NULL)
		return;
	if (ac == cl.cmd)
		cl.cmd = NULL;
	else if (ac == cl.sub)
		cl.sub = NULL;
	else if (ac == cl.sentinel) {
		cl.sentinel = NULL;
		cl.next_sentinel++;
		cluster_drop("cannot connect to sentinel %s:%d: %s", cl.host,
		    cl.port, ac->errstr);
		return;
	}
	cluster_drop("cannot connect: %s", ac->errstr);
}

static void
cluster_heartbeat(void);

static void
cluster_maybe_up(void)
{
	if (!cl.cmd_ready || !cl.sub_ready || cl.state == LINK_UP)
		return;
	cluster_set_state(LINK_UP);
	cl.connects++;
	log_info("cluster: connected to Redis %s as node \"%s\"%s",
	    cl.conf->cl_url, cl.conf->cl_node, cl.failures > 0 ?
	    "; catching up" : "");
	cl.failures = 0;
	cl.next_heartbeat = 0;
	if (cl.nawaited > 0) {
		cl.settle_until = util_now() + CLUSTER_SETTLE_MAX;
		log_info("cluster: waiting up to %ds for the %zu other "
		    "node%s seen before the drop", CLUSTER_SETTLE_MAX,
		    cl.nawaited, cl.nawaited > 1 ? "s" : "");
	}
	cluster_heartbeat();
	if (cl.hooks != NULL && cl.hooks->ch_up != NULL)
		cl.hooks->ch_up();
}

/* AUTH and SELECT on either connection: an error drops the link. */
static void
cluster_setup_done(redisAsyncContext *ac, void *reply, void *arg)
{
	const redisReply	*r = reply;
	const char		*what = arg;

	if (r == NULL || ac->data == NULL)
		return;		/* dropped meanwhile */
	if (r->type == REDIS_REPLY_ERROR) {
		cluster_drop("%s refused: %.*s", what, (int)r->len, r->str);
		return;
	}
	if (strcmp(what, "SELECT") == 0) {
		if (ac == cl.cmd && cl.conf->cl_master == NULL)
			cl.cmd_ready = 1;
		cluster_maybe_up();
	}
}

/* Through a sentinel: only a master will do (its answer may be stale). */
static void
cluster_role_done(redisAsyncContext *ac, void *reply, void *arg)
{
	const redisReply	*r = reply;

	(void)arg;
	if (r == NULL || ac->data == NULL)
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(r->element[0]->str, "master") != 0) {
		cl.next_sentinel++;
		cluster_drop("%s:%d, given by the sentinel, is not the master",
		    cl.host, cl.port);
		return;
	}
	cl.cmd_ready = 1;
	cluster_maybe_up();
}

static void
cluster_message(redisAsyncContext *ac, void *reply, void *arg)
{
	const redisReply	*r = reply, *kind, *payload;
	char			*msg;

	(void)arg;
	if (r == NULL || ac->data == NULL)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		cluster_drop("SUBSCRIBE refused: %.*s", (int)r->len, r->str);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
		return;
	kind = r->element[0];
	payload = r->element[2];
	if (kind->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(kind->str, "subscribe") == 0) {
		cl.sub_ready = 1;
		cluster_maybe_up();
		return;
	}
	if (strcmp(kind->str, "message") != 0 ||
	    payload->type != REDIS_REPLY_STRING || cl.state != LINK_UP)
		return;
	if (payload->len > CLUSTER_MESSAGE_MAX) {
		log_warnx("cluster: a message of %zu bytes on %s ignored",
		    payload->len, cl.channel);
		return;
	}
	msg = xstrndup(payload->str, payload->len);
	if (cl.hooks != NULL && cl.hooks->ch_message != NULL)
		cl.hooks->ch_message(msg);
	free(msg);
}

static void
cluster_auth_select(redisAsyncContext *ac)
{
	char	 db[16];

	if (cl.conf->cl_password != NULL && cl.conf->cl_user != NULL)
		redisAsyncCommand(ac, cluster_setup_done, (void *)"AUTH",
		    "AUTH %s %s", cl.conf->cl_user, cl.conf->cl_password);
	else if (cl.conf->cl_password != NULL)
		redisAsyncCommand(ac, cluster_setup_done, (void *)"AUTH",
		    "AUTH %s", cl.conf->cl_password);
	snprintf(db, sizeof(db), "%d", cl.conf->cl_db);
	redisAsyncCommand(ac, cluster_setup_done, (void *)"SELECT",
	    "SELECT %s", db);
}

static redisAsyncContext *
cluster_dial(void)
{
	redisAsyncContext	*ac;

	if (cl.conf->cl_unix != NULL)
		ac = redisAsyncConnectUnix(cl.conf->cl_unix);
	else
		ac = redisAsyncConnect(cl.addr, cl.port);
	if (ac == NULL)
		fatalx("%s: out of memory", __func__);
	if (ac->err) {
		cluster_error(ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = &cl;
	if (redisLibeventAttach(ac, cl.base) != REDIS_OK)
		fatalx("%s: redisLibeventAttach", __func__);
	redisAsyncSetConnectCallback(ac, cluster_connected);
	redisAsyncSetDisconnectCallback(ac, cluster_disconnected);
	cluster_auth_select(ac);
	return ac;
}

static void
cluster_open(void)
{
	char	*why;

	cluster_set_state(LINK_CONNECTING);
	if ((cl.cmd = cluster_dial()) == NULL ||
	    (cl.sub = cluster_dial()) == NULL) {
		why = xstrdup(cl.last_error != NULL ? cl.last_error : "?");
		cluster_drop("cannot connect: %s", why);
		free(why);
		return;
	}
	redisAsyncCommand(cl.sub, cluster_message, NULL, "SUBSCRIBE %s",
	    cl.channel);
	if (cl.conf->cl_master != NULL)
		redisAsyncCommand(cl.cmd, cluster_role_done, NULL, "ROLE");
}

static void
cluster_resolved(int err, struct evutil_addrinfo *ai, void *arg)
{
	(void)arg;
	cl.resolve = NULL;
	if (err == EVUTIL_EAI_CANCEL)
		return;
	if (err != 0 || ai == NULL) {
		if (cl.state == LINK_SENTINEL)
			cl.next_sentinel++;
		cluster_drop("cannot resolve %s: %s", cl.host,
		    evutil_gai_strerror(err));
		return;
	}
	if (ai->ai_family == AF_INET6)
		evutil_inet_ntop(AF_INET6, &((struct sockaddr_in6 *)
		    (void *)ai->ai_addr)->sin6_addr, cl.addr, sizeof(cl.addr));
	else
		evutil_inet_ntop(AF_INET, &((struct sockaddr_in *)
		    (void *)ai->ai_addr)->sin_addr, cl.addr, sizeof(cl.addr));
	evutil_freeaddrinfo(ai);
	if (cl.state == LINK_SENTINEL)
		cluster_sentinel_dial();
	else
		cluster_open();
}

static void
cluster_resolve(const char *host, int port)
{
	struct evutil_addrinfo	 hints;

	free(cl.host);
	cl.host = xstrdup(host);
	cl.port = port;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	cl.resolve = evdns_getaddrinfo(cl.dns, cl.host, NULL, &hints,
	    cluster_resolved, NULL);
}

/*
 * Redis Sentinel: ask one sentinel where the master is, then connect to
 * it as to any Redis.  A sentinel that fails is passed over for the next
 * at the next attempt; so is one whose answer was not a master.
 */
static void
cluster_sentinel_answer(redisAsyncContext *ac, void *reply, void *arg)
{
	const redisReply	*r = reply;
	long long		 port;
	char			*host;

	(void)arg;
	if (r == NULL || ac->data == NULL)
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    conf_number(r->element[1]->str, 1, 65535, &port) == -1 ||
	    r->element[0]->len == 0 || r->element[0]->len > NI_MAXHOST) {
		cl.next_sentinel++;
		cluster_drop("sentinel %s:%d knows no master \"%s\"", cl.host,
		    cl.port, cl.conf->cl_master);
		return;
	}
	host = xstrdup(r->element[0]->str);
	log_debug("cluster: sentinel %s:%d: master \"%s\" is %s:%lld",
	    cl.host, cl.port, cl.conf->cl_master, host, port);
	cluster_link_free(&cl.sentinel);
	cluster_set_state(LINK_RESOLVING);
	cluster_resolve(host, (int)port);
	free(host);
}

static void
cluster_sentinel_dial(void)
{
	redisAsyncContext	*ac;

	ac = redisAsyncConnect(cl.addr, cl.port);
	if (ac == NULL)
		fatalx("%s: out of memory", __func__);
	if (ac->err) {
		cl.next_sentinel++;
		cluster_drop("cannot connect to sentinel %s:%d: %s", cl.host,
		    cl.port, ac->errstr);
		redisAsyncFree(ac);
		return;
	}
	ac->data = &cl;
	if (redisLibeventAttach(ac, cl.base) != REDIS_OK)
		fatalx("%s: redisLibeventAttach", __func__);
	redisAsyncSetConnectCallback(ac, cluster_connected);
	redisAsyncSetDisconnectCallback(ac, cluster_disconnected);
	cl.sentinel = ac;
	redisAsyncCommand(ac, cluster_sentinel_answer, NULL,
	    "SENTINEL get-master-addr-by-name %s", cl.conf->cl_master);
}

static void
cluster_connect(void)
{
	const struct conf_cluster	*conf = cl.conf;
	int				 i;

	cl.connect_started = util_monotonic();
	if (conf->cl_unix != NULL) {
		cluster_open();
		return;
	}
	if (conf->cl_master != NULL) {
		cluster_set_state(LINK_SENTINEL);
		i = cl.next_sentinel % conf->cl_nsentinels;
		cluster_resolve(conf->cl_sentinel_hosts[i],
		    conf->cl_sentinel_ports[i]);
		return;
	}
	cluster_set_state(LINK_RESOLVING);
	cluster_resolve(conf->cl_host, conf->cl_port);
}

static void
cluster_retry_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	if (cl.state == LINK_DOWN)
		cluster_connect();
}

/* Heartbeat and membership. */

/*
 * PREFIX:members of another type (written by something else): it holds
 * nothing but heartbeats, which are made again within 2 s, so it is
 * replaced rather than left to keep every node out of the fleet.
 */
static int
cluster_members_wrong_type(const redisReply *r)
{
	char	*key;

	if (r == NULL || r->type != REDIS_REPLY_ERROR ||
	    strncmp(r->str, "WRONGTYPE", 9) != 0)
		return 0;
	key = cluster_keyname("members", NULL);
	log_warnx("cluster: %s: ignored: not a sorted set; replaced", key);
	cluster_command(NULL, NULL, "DEL", key, NULL);
	cl.next_heartbeat = 0;
	free(key);
	return 1;
}

static void
cluster_members_done(const redisReply *r, void *arg)
{
	size_t	 i;

	(void)arg;
	if (cluster_members_wrong_type(r) ||
	    cluster_reply_failed(r, "reading the members"))
		return;
	if (r->type != REDIS_REPLY_ARRAY) {
		log_warnx("cluster: %s:members is not a sorted set",
		    cl.conf->cl_prefix);
		return;
	}
	cluster_members_clear();
	cl.members = xcalloc(r->elements + 1, sizeof(char *));
	for (i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_STRING)
			continue;
		cl.members[cl.nmembers++] = xstrndup(r->element[i]->str,
		    r->element[i]->len);
	}
	cluster_members_returned();
}

static void
cluster_heartbeat_done(const redisReply *r, void *arg)
{
	(void)arg;
	if (!cluster_members_wrong_type(r))
		cluster_reply_failed(r, "heartbeat");
}

static void
cluster_heartbeat(void)
{
	char	*key, until[32], now[32], stale[32];
	int64_t	 ms = (int64_t)util_now() * 1000;

	if (cl.state != LINK_UP || util_now() < cl.next_heartbeat)
		return;
	cl.next_heartbeat = util_now() + CLUSTER_HEARTBEAT;
	key = cluster_keyname("members", NULL);
	snprintf(until, sizeof(until), "%lld", (long long)(ms +
	    CLUSTER_MEMBER_TTL * 1000));
	snprintf(now, sizeof(now), "%lld", (long long)ms);
	/* Members gone for a day are forgotten, not kept forever. */
	snprintf(stale, sizeof(stale), "(%lld", (long long)(ms - 86400000LL));
	cluster_command(cluster_heartbeat_done, NULL, "ZADD", key, until,
	    cl.conf->cl_node, NULL);
	cluster_command(cluster_heartbeat_done, NULL, "ZREMRANGEBYSCORE", key,
	    "-inf", stale, NULL);
	cluster_command(cluster_members_done, NULL, "ZRANGEBYSCORE", key, now,
	    "+inf", NULL);
	free(key);
}

/* Once a second: the watchdog, the heartbeat, the hooks' own tick. */
static void
cluster_tick(int fd, short ev, void *arg)
{
	struct cluster_cmd	*cc;

	(void)fd;
	(void)ev;
	(void)arg;
	if (cl.state == LINK_CONNECTING || cl.state == LINK_RESOLVING ||
	    cl.state == LINK_SENTINEL) {
		if (util_monotonic() - cl.connect_started >
		    CLUSTER_CMD_TIMEOUT) {
			if (cl.state == LINK_SENTINEL)
				cl.next_sentinel++;
			cluster_drop("no answer from %s:%d within %ds",
			    cl.host != NULL ? cl.host : "?", cl.port,
			    CLUSTER_CMD_TIMEOUT);
		}
		return;
	}
	if ((cc = TAILQ_FIRST(&cl.inflight)) != NULL &&
	    util_monotonic() - cc->cc_sent > CLUSTER_CMD_TIMEOUT) {
		cluster_drop("no answer within %ds (%zu commands waiting)",
		    CLUSTER_CMD_TIMEOUT, cl.ninflight);
		return;
	}
	cluster_heartbeat();
	if (cl.state == LINK_UP && cl.hooks != NULL && cl.hooks->ch_tick != NULL)
		cl.hooks->ch_tick();
}

int
cluster_start(struct event_base *base, struct evdns_base *dns,
    const struct conf_cluster *conf, const struct cluster_hooks *hooks)
{
	struct timeval	 tv = { 1, 0 };

	memset(&cl, 0, sizeof(cl));
	TAILQ_INIT(&cl.inflight);
	cl.base = base;
	cl.dns = dns;
	cl.conf = conf;
	cl.hooks = hooks;
	cl.secret_ok = -1;
	cl.channel = cluster_keyname("events", NULL);
	cluster_seal_key_id(conf->cl_key, cl.key_id);
	cl.retry_ev = evtimer_new(base, cluster_retry_cb, NULL);
	cl.tick_ev = event_new(base, -1, EV_PERSIST, cluster_tick, NULL);
	if (cl.retry_ev == NULL || cl.tick_ev == NULL)
		fatalx("%s: event_new", __func__);
	evtimer_add(cl.tick_ev, &tv);
	log_info("cluster: node \"%s\", Redis %s, prefix \"%s\", secret key "
	    "id %s", conf->cl_node, conf->cl_url, conf->cl_prefix, cl.key_id);
	cluster_connect();
	return 0;
}

static int	cluster_flushed;	/* static: may be set after we return */

static void
cluster_flush_done(const redisReply *r, void *arg)
{
	(void)r;
	(void)arg;
	cluster_flushed = 1;
}

static void
cluster_flush_timeout(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	cluster_flushed = 1;
}

/*
 * At exit: leave the members, then wait, at most CLUSTER_FLUSH_WAIT
 * seconds, until Redis has answered everything sent before, so that
 * the leases just released are free for the other nodes at once, and
 * no ordering node waits for this one's acknowledgement.
 */
static void
cluster_flush(void)
{
	struct timeval	 tv = { CLUSTER_FLUSH_WAIT, 0 };
	struct event	*timer;
	char		*key;

	if (cl.state != LINK_UP)
		return;
	key = cluster_keyname("members", NULL);
	cluster_command(NULL, NULL, "ZREM", key, cl.conf->cl_node, NULL);
	free(key);
	cluster_flushed = 0;
	if (cluster_command(cluster_flush_done, NULL, "PING", NULL) == NULL)
		return;
	if ((timer = evtimer_new(cl.base, cluster_flush_timeout, NULL)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	evtimer_add(timer, &tv);
	while (!cluster_flushed && cl.state == LINK_UP)
		event_base_loop(cl.base, EVLOOP_ONCE);
	event_free(timer);
}

void
cluster_stop(void)
{
	if (cl.conf == NULL)
		return;
	cluster_flush();
	if (cl.resolve != NULL)
		evdns_getaddrinfo_cancel(cl.resolve);
	cl.resolve = NULL;
	cl.state = LINK_DOWN;
	cluster_link_free(&cl.cmd);
	cluster_link_free(&cl.sub);
	cluster_members_clear();
	cluster_strv_free(&cl.awaited, &cl.nawaited);
	event_free(cl.retry_ev);
	event_free(cl.tick_ev);
	cluster_link_free(&cl.sentinel);
	free(cl.host);
	free(cl.channel);
	free(cl.last_error);
	memset(&cl, 0, sizeof(cl));
}

/* Whether node is live (its heartbeat has not expired), as last read. */
size_t
cluster_members(char *const **members)
{
	*members = cl.members;
	return cl.nmembers;
}

void
cluster_secret_verdict(int ok)
{
	cl.secret_ok = ok;
}

/* The link's part of GET /v1/status (cluster_get_status() adds leases). */
void
cluster_link_status(struct cluster_status *cs)
{
	memset(cs, 0, sizeof(*cs));
	if (cl.conf == NULL)
		return;
	cs->cs_enabled = 1;
	cs->cs_connected = cl.state == LINK_UP;
	cs->cs_state = cluster_link_names[cl.state];
	cs->cs_node = cl.conf->cl_node;
	cs->cs_url = cl.conf->cl_url;
	cs->cs_prefix = cl.conf->cl_prefix;
	cs->cs_members = cl.members;
	cs->cs_nmembers = cl.nmembers;
	cs->cs_secret_ok = cl.secret_ok;
	cs->cs_connects = cl.connects;
	cs->cs_drops = cl.drops;
	cs->cs_inflight = cl.ninflight;
	cs->cs_last_error = cl.last_error;
	cs->cs_last_error_at = cl.last_error_at;
}
