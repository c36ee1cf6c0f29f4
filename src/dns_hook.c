/*
 * dns_hook: publish or remove a dns-01 TXT record by running the
 * issuer's hook program, "PROGRAM add|del FQDN VALUE", the way uacme,
 * dehydrated and lego's exec provider do.
 *
 * FQDN is absolute, with its trailing dot ("_acme-challenge.example.com.",
 * as lego's exec provider passes it and nsupdate reads it); VALUE is the
 * TXT record's text, base64url(SHA-256(key authorization)).  Nothing else
 * is on the command line: the hook finds its own credentials in the
 * environment it inherits from the daemon, or in its own files.  It runs
 * as the daemon's user, without a shell, in a process group of its own,
 * stdin on /dev/null and stdout and stderr on one pipe read by the loop.
 *
 * Every output line is logged (log.c escapes control bytes), up to
 * DNS_HOOK_LOG_MAX bytes a run; the rest is read and counted, so a
 * chatty hook never blocks on a full pipe.  Its exit status is the
 * result.  After timeout seconds its group gets SIGTERM, then SIGKILL
 * DNS_HOOK_KILL_GRACE seconds later; once it exits, whatever it left in
 * its group is killed too, so no process outlives its run.
 *
 * One hook runs at a time, in the order asked: a "del" of one record and
 * the "add" of the next for the same name (a wildcard and its apex) reach
 * the DNS in that order.  The end of the process is seen through a pidfd,
 * so the daemon needs no SIGCHLD handler and reaps only its own children.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "sidecar.h"

#define DNS_HOOK_LOG_MAX	(64 * 1024)	/* bytes of output logged a run */
#define DNS_HOOK_LINE_MAX	1024		/* longer lines are cut */
#define DNS_HOOK_KILL_GRACE	2		/* seconds, SIGTERM to SIGKILL */
#define DNS_HOOK_LAST_MAX	200		/* of the last line, in a cause */
#define DNS_HOOK_EXEC_FAILED	"cannot execute it: missing, or not " \
				"executable by the daemon's user\n"

enum dns_hook_state {
	DNS_HOOK_QUEUED,
	DNS_HOOK_RUNNING,
	DNS_HOOK_KILLING,	/* timed out: SIGTERM sent */
	DNS_HOOK_STATE_MAX
};

static const char *dns_hook_state_names[DNS_HOOK_STATE_MAX] = {
	"queued", "running", "killing"
};

struct dns_hook_job {
	enum dns_hook_state	 dj_state;
	struct event_base	*dj_base;
	char			*dj_argv[5];	/* PROGRAM VERB FQDN VALUE NULL */
	int			 dj_timeout;
	dns_hook_cb		 dj_cb;		/* NULL once forgotten */
	void			*dj_arg;
	pid_t			 dj_pid;
	int			 dj_pidfd;
	int			 dj_out;	/* the pipe's read end */
	struct event		*dj_out_ev;
	struct event		*dj_exit_ev;
	struct event		*dj_timer;
	char			 dj_line[DNS_HOOK_LINE_MAX + 1];
	size_t			 dj_linelen;
	char			 dj_last[DNS_HOOK_LAST_MAX + 1];
	size_t			 dj_logged;	/* bytes logged */
	size_t			 dj_dropped;	/* bytes past the cap */
	TAILQ_ENTRY(dns_hook_job) dj_entry;
};

static TAILQ_HEAD(, dns_hook_job) dns_hook_queue =
    TAILQ_HEAD_INITIALIZER(dns_hook_queue);

static void	 dns_hook_next(void);

static void
dns_hook_set_state(struct dns_hook_job *dj, enum dns_hook_state state)
{
	if (state < 0 || state >= DNS_HOOK_STATE_MAX)
		fatalx("%s: bad state %d", __func__, (int)state);
	log_debug("dns_hook %s %s: %s -> %s", dj->dj_argv[1], dj->dj_argv[2],
	    dns_hook_state_names[dj->dj_state], dns_hook_state_names[state]);
	dj->dj_state = state;
}

static void
dns_hook_free(struct dns_hook_job *dj)
{
	int	 i;

	if (dj->dj_out_ev != NULL)
		event_free(dj->dj_out_ev);
	if (dj->dj_exit_ev != NULL)
		event_free(dj->dj_exit_ev);
	if (dj->dj_timer != NULL)
		event_free(dj->dj_timer);
	if (dj->dj_out != -1)
		close(dj->dj_out);
	if (dj->dj_pidfd != -1)
		close(dj->dj_pidfd);
	for (i = 0; dj->dj_argv[i] != NULL; i++)
		free(dj->dj_argv[i]);
	free(dj);
}

/*
 * One line of output, to the log while under the cap; nl: it ended with
 * a newline (counted), not at the length limit or the end of output.
 */
static void
dns_hook_line(struct dns_hook_job *dj, int nl)
{
	dj->dj_line[dj->dj_linelen] = '\0';
	if (dj->dj_linelen > 0)
		snprintf(dj->dj_last, sizeof(dj->dj_last), "%.*s",
		    DNS_HOOK_LAST_MAX, dj->dj_line);
	if (dj->dj_logged >= DNS_HOOK_LOG_MAX) {
		dj->dj_dropped += dj->dj_linelen + (nl ? 1 : 0);
	} else {
		dj->dj_logged += dj->dj_linelen + (nl ? 1 : 0);
		log_info("dns_hook %s %s: %s", dj->dj_argv[1], dj->dj_argv[2],
		    dj->dj_line);
	}
	dj->dj_linelen = 0;
}

static void
dns_hook_take(struct dns_hook_job *dj, const char *buf, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++) {
		if (buf[i] == '\n' || dj->dj_linelen == DNS_HOOK_LINE_MAX) {
			dns_hook_line(dj, buf[i] == '\n');
			if (buf[i] == '\n')
				continue;
		}
		/* A NUL would end the line early in the log. */
		dj->dj_line[dj->dj_linelen++] = buf[i] != '\0' ? buf[i] : ' ';
	}
}

/* Read what the pipe holds; 1 at its end (or on an error), else 0. */
static int
dns_hook_read(struct dns_hook_job *dj)
{
	char	 buf[4096];
	ssize_t	 n;

	for (;;) {
		n = read(dj->dj_out, buf, sizeof(buf));
		if (n > 0) {
			dns_hook_take(dj, buf, (size_t)n);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return 0;
		return 1;
	}
}

static void
dns_hook_out_cb(int fd, short ev, void *arg)
{
	struct dns_hook_job	*dj = arg;

	(void)fd;
	(void)ev;
	if (dns_hook_read(dj)) {
		/* End of output; the process may still run. */
		event_del(dj->dj_out_ev);
	}
}

/* Its last line, with control bytes made plain, for a cause. */
static void
dns_hook_cause_last(const struct dns_hook_job *dj, char *out, size_t size)
{
	size_t	 i;

	if (dj->dj_last[0] == '\0') {
		out[0] = '\0';
		return;
	}
	snprintf(out, size, " (its last line: \"%s\")", dj->dj_last);
	for (i = 0; out[i] != '\0'; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			out[i] = '?';
}

/* The process has exited (or been killed): report, run the next. */
static void
dns_hook_exited(struct dns_hook_job *dj, int status)
{
	char	*why = NULL, last[DNS_HOOK_LAST_MAX + 32];
	int	 rc = -1;

	dns_hook_read(dj);
	if (dj->dj_linelen > 0)
		dns_hook_line(dj, 0);
	if (dj->dj_dropped > 0)
		log_warnx("dns_hook %s %s: %zu more bytes of output not logged "
		    "(at most %d a run)", dj->dj_argv[1], dj->dj_argv[2],
		    dj->dj_dropped, DNS_HOOK_LOG_MAX);
	dns_hook_cause_last(dj, last, sizeof(last));
	if (dj->dj_state == DNS_HOOK_KILLING)
		xasprintf(&why, "dns_hook %s %s %s timed out after %ds and was "
		    "killed%s", dj->dj_argv[0], dj->dj_argv[1], dj->dj_argv[2],
		    dj->dj_timeout, last);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		rc = 0;
	else if (WIFEXITED(status))
		xasprintf(&why, "dns_hook %s %s %s exited with status %d%s",
		    dj->dj_argv[0], dj->dj_argv[1], dj->dj_argv[2],
		    WEXITSTATUS(status), last);
	else
		xasprintf(&why, "dns_hook %s %s %s was killed by signal %d%s",
		    dj->dj_argv[0], dj->dj_argv[1], dj->dj_argv[2],
		    WIFSIGNALED(status) ? WTERMSIG(status) : 0, last);
	TAILQ_REMOVE(&dns_hook_queue, dj, dj_entry);
	if (rc == 0)
		log_debug("dns_hook %s %s: done", dj->dj_argv[1],
		    dj->dj_argv[2]);
	if (dj->dj_cb != NULL)
		dj->dj_cb(rc, why, dj->dj_arg);
	else if (rc == -1)
		log_warnx("%s", why);
	free(why);
	dns_hook_free(dj);
	dns_hook_next();
}

static void
dns_hook_exit_cb(int fd, short ev, void *arg)
{
	struct dns_hook_job	*dj = arg;
	int			 status = 0;
	pid_t			 pid;

	(void)fd;
	(void)ev;
	/*
	 * The pidfd is readable once the hook has exited.  What it left in
	 * its group would hold the pipe open, or linger: killed while the
	 * unreaped hook still holds its pid, so no other group can have
	 * taken that id.
	 */
	kill(-dj->dj_pid, SIGKILL);
	pid = waitpid(dj->dj_pid, &status, WNOHANG);
	if (pid == 0 || (pid == -1 && errno == EINTR))
		return;
	if (pid == -1)
		log_warn("dns_hook: waitpid %ld", (long)dj->dj_pid);
	dns_hook_exited(dj, status);
}

static void
dns_hook_timer_cb(int fd, short ev, void *arg)
{
	struct dns_hook_job	*dj = arg;
	struct timeval		 tv = { DNS_HOOK_KILL_GRACE, 0 };

	(void)fd;
	(void)ev;
	if (dj->dj_state == DNS_HOOK_RUNNING) {
		log_warnx("dns_hook %s %s: no result after %ds: terminating it",
		    dj->dj_argv[1], dj->dj_argv[2], dj->dj_timeout);
		dns_hook_set_state(dj, DNS_HOOK_KILLING);
		kill(-dj->dj_pid, SIGTERM);
		evtimer_add(dj->dj_timer, &tv);
		return;
	}
	kill(-dj->dj_pid, SIGKILL);
}

/*
 * In the child, between fork and exec: async-signal-safe calls only (the
 * writer thread may hold a lock).  The argument vector is built before.
 */
static void __attribute__((noreturn))
dns_hook_child(int out, char *const argv[])
{
	sigset_t	 none;
	int		 null, fd;

	setpgid(0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if ((null = open("/dev/null", O_RDONLY)) == -1 ||
	    dup2(null, STDIN_FILENO) == -1 || dup2(out, STDOUT_FILENO) == -1 ||
	    dup2(out, STDERR_FILENO) == -1)
		_exit(126);
	/* Nothing of the daemon's (sockets, keys' files) goes to the hook. */
	if (syscall(SYS_close_range, 3U, ~0U, 0U) == -1)
		for (fd = 3; fd < 65536; fd++)
			close(fd);
	execv(argv[0], argv);
	/* Seen as its last line, in the cause. */
	if (write(STDERR_FILENO, DNS_HOOK_EXEC_FAILED,
	    sizeof(DNS_HOOK_EXEC_FAILED) - 1) == -1)
		_exit(127);
	_exit(127);
}

static int
dns_hook_spawn(struct dns_hook_job *dj, char **why)
{
	struct timeval	 tv = { dj->dj_timeout, 0 };
	int		 p[2];

	if (pipe2(p, O_CLOEXEC) == -1) {
		xasprintf(why, "dns_hook: pipe: %s", strerror(errno));
		return -1;
	}
	if ((dj->dj_pid = fork()) == -1) {
		xasprintf(why, "dns_hook: fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (dj->dj_pid == 0)
		dns_hook_child(p[1], dj->dj_argv);
	close(p[1]);
	/* Both sides set the group: kill(-pid) works whichever runs first. */
	setpgid(dj->dj_pid, dj->dj_pid);
	dj->dj_out = p[0];
	if (fcntl(dj->dj_out, F_SETFL, O_NONBLOCK) == -1)
		fatal("%s: fcntl", __func__);
	if ((dj->dj_pidfd = (int)syscall(SYS_pidfd_open, dj->dj_pid, 0)) == -1)
		fatal("%s: pidfd_open", __func__);
	dj->dj_out_ev = event_new(dj->dj_base, dj->dj_out, EV_READ|EV_PERSIST,
	    dns_hook_out_cb, dj);
	dj->dj_exit_ev = event_new(dj->dj_base, dj->dj_pidfd,
	    EV_READ|EV_PERSIST, dns_hook_exit_cb, dj);
	dj->dj_timer = evtimer_new(dj->dj_base, dns_hook_timer_cb, dj);
	if (dj->dj_out_ev == NULL || dj->dj_exit_ev == NULL ||
	    dj->dj_timer == NULL)
		fatalx("%s: event_new", __func__);
	event_add(dj->dj_out_ev, NULL);
	event_add(dj->dj_exit_ev, NULL);
	evtimer_add(dj->dj_timer, &tv);
	log_info("dns_hook %s %s: running %s", dj->dj_argv[1], dj->dj_argv[2],
	    dj->dj_argv[0]);
	return 0;
}

/* Start the first job waiting, unless one runs. */
static void
dns_hook_next(void)
{
	struct dns_hook_job	*dj;
	char			*why = NULL;

	while ((dj = TAILQ_FIRST(&dns_hook_queue)) != NULL &&
	    dj->dj_state == DNS_HOOK_QUEUED) {
		dns_hook_set_state(dj, DNS_HOOK_RUNNING);
		if (dns_hook_spawn(dj, &why) == 0)
			return;
		TAILQ_REMOVE(&dns_hook_queue, dj, dj_entry);
		if (dj->dj_cb != NULL)
			dj->dj_cb(-1, why, dj->dj_arg);
		else
			log_warnx("%s", why);
		free(why);
		why = NULL;
		dns_hook_free(dj);
	}
}

static void
dns_hook_next_cb(int fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
	dns_hook_next();
}

/*
 * Run "program verb fqdn value" after the jobs asked before; cb gets 0,
 * or -1 and why, once it is over.  Never calls cb before returning.
 */
struct dns_hook_job *
dns_hook_run(struct event_base *base, const char *program, int timeout,
    const char *verb, const char *fqdn, const char *value, dns_hook_cb cb,
    void *arg)
{
	struct dns_hook_job	*dj;
	int			 idle = TAILQ_EMPTY(&dns_hook_queue);

	dj = xcalloc(1, sizeof(*dj));
	dj->dj_base = base;
	dj->dj_argv[0] = xstrdup(program);
	dj->dj_argv[1] = xstrdup(verb);
	dj->dj_argv[2] = xstrdup(fqdn);
	dj->dj_argv[3] = xstrdup(value);
	dj->dj_timeout = timeout;
	dj->dj_cb = cb;
	dj->dj_arg = arg;
	dj->dj_pid = -1;
	dj->dj_pidfd = dj->dj_out = -1;
	dj->dj_state = DNS_HOOK_QUEUED;
	TAILQ_INSERT_TAIL(&dns_hook_queue, dj, dj_entry);
	if (idle) {
		/* Started from the loop: cb must not run inside this call. */
		if (event_base_once(base, -1, EV_TIMEOUT, dns_hook_next_cb,
		    NULL, NULL) == -1)
			fatalx("%s: event_base_once", __func__);
	}
	return dj;
}

/*
 * The caller no longer wants the result: the job still runs (a "del"
 * queued after an "add" must find the add done), its failure is logged.
 */
void
dns_hook_forget(struct dns_hook_job *dj)
{
	if (dj != NULL)
		dj->dj_cb = NULL;
}

/* At exit: no hook outlives the daemon, none queued starts. */
void
dns_hook_shutdown(void)
{
	struct dns_hook_job	*dj;

	while ((dj = TAILQ_FIRST(&dns_hook_queue)) != NULL) {
		TAILQ_REMOVE(&dns_hook_queue, dj, dj_entry);
		if (dj->dj_pid > 0) {
			kill(-dj->dj_pid, SIGKILL);
			waitpid(dj->dj_pid, NULL, 0);
		}
		if (strcmp(dj->dj_argv[1], "del") == 0)
			log_warnx("dns_hook del %s: not run, the daemon is "
			    "exiting: the next start removes the record",
			    dj->dj_argv[2]);
		dns_hook_free(dj);
	}
}
