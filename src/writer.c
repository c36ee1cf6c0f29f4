/*
 * Certificate writes off the event loop.
 *
 * Saving a certificate creates a generation folder, three files and a
 * link, and syncs them: a few milliseconds on a quiet disk, much more on
 * a busy or networked one.  Done on the loop, a thousand issuances would
 * stall every order in flight for seconds.  So one thread runs the
 * writes, in order, and hands each outcome back to the loop through a
 * pipe.  It takes every job queued so far as one batch, which
 * store_save_certs() makes durable with one sync, not one per file: the
 * more certificates arrive while it syncs, the fewer syncs each costs.
 * Only the loop thread queues, cancels and sees callbacks; the thread
 * touches nothing but its jobs and the two queues under the lock.
 */
#include <sys/queue.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "sidecar.h"

#define WRITER_BATCH_MAX	256	/* jobs synced together */

struct writer_job {
	int			 wj_cancelled;
	char			*wj_dir;
	char			*wj_id;
	char			*wj_chain;
	X509			*wj_leaf;	/* chain's first, or NULL */
	EVP_PKEY		*wj_key;
	struct cert_meta	 wj_meta;
	int			 wj_rc;
	char			*wj_cause;
	writer_cb		 wj_cb;
	void			*wj_arg;
	TAILQ_ENTRY(writer_job)	 wj_entry;
};
TAILQ_HEAD(writer_jobs, writer_job);

static pthread_t		 writer_thread;
static pthread_mutex_t		 writer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t		 writer_wake = PTHREAD_COND_INITIALIZER;
static struct writer_jobs	 writer_pending =
    TAILQ_HEAD_INITIALIZER(writer_pending);
static struct writer_jobs	 writer_done = TAILQ_HEAD_INITIALIZER(writer_done);
static int			 writer_stopping;
static int			 writer_running;
static int			 writer_pipe[2] = { -1, -1 };
static struct event		*writer_ev;

static void
writer_job_free(struct writer_job *wj)
{
	free(wj->wj_dir);
	free(wj->wj_id);
	free(wj->wj_chain);
	X509_free(wj->wj_leaf);
	EVP_PKEY_free(wj->wj_key);
	store_meta_clear(&wj->wj_meta);
	free(wj->wj_cause);
	free(wj);
}

/* Save the batch, in order; called without the lock. */
static void
writer_run(struct writer_jobs *batch, struct store_save *sv)
{
	struct writer_job	*wj;
	size_t			 n = 0;

	TAILQ_FOREACH(wj, batch, wj_entry) {
		memset(&sv[n], 0, sizeof(sv[n]));
		sv[n].sv_dir = wj->wj_dir;
		sv[n].sv_id = wj->wj_id;
		sv[n].sv_chain = wj->wj_chain;
		sv[n].sv_leaf = wj->wj_leaf;
		sv[n].sv_key = wj->wj_key;
		sv[n].sv_meta = &wj->wj_meta;
		n++;
	}
	store_save_certs(sv, n);
	n = 0;
	TAILQ_FOREACH(wj, batch, wj_entry) {
		wj->wj_rc = sv[n].sv_rc;
		wj->wj_cause = sv[n].sv_cause;
		n++;
	}
}

static void *
writer_main(void *arg)
{
	struct writer_jobs	 batch = TAILQ_HEAD_INITIALIZER(batch);
	struct writer_job	*wj;
	struct store_save	*sv;
	char			 one = 1;
	size_t			 n;

	(void)arg;
	sv = xreallocarray(NULL, WRITER_BATCH_MAX, sizeof(*sv));
	pthread_mutex_lock(&writer_lock);
	for (;;) {
		while (TAILQ_EMPTY(&writer_pending) && !writer_stopping)
			pthread_cond_wait(&writer_wake, &writer_lock);
		if (TAILQ_EMPTY(&writer_pending))
			break;		/* stopping, and nothing left */
		for (n = 0; n < WRITER_BATCH_MAX &&
		    (wj = TAILQ_FIRST(&writer_pending)) != NULL; n++) {
			TAILQ_REMOVE(&writer_pending, wj, wj_entry);
			TAILQ_INSERT_TAIL(&batch, wj, wj_entry);
		}
		pthread_mutex_unlock(&writer_lock);

		writer_run(&batch, sv);

		pthread_mutex_lock(&writer_lock);
		TAILQ_CONCAT(&writer_done, &batch, wj_entry);
		/* A full pipe already holds a wake-up: nothing is lost. */
		if (write(writer_pipe[1], &one, 1) == -1 && errno != EAGAIN)
			log_warn("writer: waking the loop");
	}
	pthread_mutex_unlock(&writer_lock);
	free(sv);
	return NULL;
}

/* Deliver finished jobs, on the loop thread. */
static void
writer_deliver(int fd, short ev, void *arg)
{
	struct writer_jobs	 done = TAILQ_HEAD_INITIALIZER(done);
	struct writer_job	*wj;
	char			 buf[64];

	(void)ev;
	(void)arg;
	while (read(fd, buf, sizeof(buf)) > 0)
		continue;
	pthread_mutex_lock(&writer_lock);
	TAILQ_CONCAT(&done, &writer_done, wj_entry);
	pthread_mutex_unlock(&writer_lock);
	while ((wj = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, wj, wj_entry);
		if (!wj->wj_cancelled)
			wj->wj_cb(wj->wj_rc, wj->wj_cause, wj->wj_arg);
		writer_job_free(wj);
	}
}

int
writer_start(struct event_base *base, char **cause)
{
	int	 i, flags;

	if (pipe(writer_pipe) == -1) {
		xasprintf(cause, "writer: pipe: %s", strerror(errno));
		return -1;
	}
	for (i = 0; i < 2; i++) {
		flags = fcntl(writer_pipe[i], F_GETFL);
		fcntl(writer_pipe[i], F_SETFL, flags | O_NONBLOCK);
		fcntl(writer_pipe[i], F_SETFD, FD_CLOEXEC);
	}
	writer_ev = event_new(base, writer_pipe[0], EV_READ | EV_PERSIST,
	    writer_deliver, NULL);
	if (writer_ev == NULL || event_add(writer_ev, NULL) == -1)
		fatalx("writer: event_new");
	writer_stopping = 0;
	if ((errno = pthread_create(&writer_thread, NULL, writer_main,
	    NULL)) != 0) {
		xasprintf(cause, "writer: pthread_create: %s", strerror(errno));
		return -1;
	}
	writer_running = 1;
	return 0;
}

/*
 * Finish every queued write, then stop: a certificate the CA has issued
 * is never dropped on the way to the disk.  Callbacks do not run.
 */
void
writer_stop(void)
{
	struct writer_job	*wj;

	if (writer_running) {
		pthread_mutex_lock(&writer_lock);
		writer_stopping = 1;
		pthread_cond_signal(&writer_wake);
		pthread_mutex_unlock(&writer_lock);
		pthread_join(writer_thread, NULL);
		writer_running = 0;
	}
	while ((wj = TAILQ_FIRST(&writer_done)) != NULL) {
		TAILQ_REMOVE(&writer_done, wj, wj_entry);
		if (wj->wj_rc == -1)
			log_warnx("writer: %s: %s", wj->wj_id, wj->wj_cause);
		writer_job_free(wj);
	}
	if (writer_ev != NULL)
		event_free(writer_ev);
	writer_ev = NULL;
	if (writer_pipe[0] != -1) {
		close(writer_pipe[0]);
		close(writer_pipe[1]);
		writer_pipe[0] = writer_pipe[1] = -1;
	}
}

static void
writer_meta_copy(struct cert_meta *dst, const struct cert_meta *src)
{
	size_t	 i;

	*dst = *src;
	dst->cm_url = src->cm_url != NULL ? xstrdup(src->cm_url) : NULL;
	dst->cm_idents = NULL;
	if (src->cm_nidents > 0) {
		dst->cm_idents = xreallocarray(NULL, src->cm_nidents,
		    sizeof(char *));
		for (i = 0; i < src->cm_nidents; i++)
			dst->cm_idents[i] = xstrdup(src->cm_idents[i]);
	}
}

/* Queue store_save_cert(); the callback runs later on the loop. */
struct writer_job *
writer_save_cert(const char *dir, const char *id, const char *chain,
    EVP_PKEY *key, const struct cert_meta *meta, writer_cb cb, void *arg)
{
	return writer_save_cert_x509(dir, id, chain, NULL, key, meta, cb, arg);
}

/*
 * The same with leaf, chain's first certificate as store_chain_leaf()
 * parsed it, or NULL.  The job holds a reference, and the loop must not
 * use leaf until the callback: only the writer thread touches it before.
 */
struct writer_job *
writer_save_cert_x509(const char *dir, const char *id, const char *chain,
    X509 *leaf, EVP_PKEY *key, const struct cert_meta *meta, writer_cb cb,
    void *arg)
{
	struct writer_job	*wj;

	wj = xcalloc(1, sizeof(*wj));
	wj->wj_dir = xstrdup(dir);
	wj->wj_id = xstrdup(id);
	wj->wj_chain = xstrdup(chain);
	if (leaf != NULL && X509_up_ref(leaf) != 1)
		fatalx("writer: X509_up_ref");
	wj->wj_leaf = leaf;
	if (EVP_PKEY_up_ref(key) != 1)
		fatalx("writer: EVP_PKEY_up_ref");
	wj->wj_key = key;
	writer_meta_copy(&wj->wj_meta, meta);
	wj->wj_cb = cb;
	wj->wj_arg = arg;

	pthread_mutex_lock(&writer_lock);
	TAILQ_INSERT_TAIL(&writer_pending, wj, wj_entry);
	pthread_cond_signal(&writer_wake);
	pthread_mutex_unlock(&writer_lock);
	return wj;
}

/*
 * The callback will not run, but the write still happens: the CA has
 * issued this certificate, and a later write of the same id replaces it
 * in order, since one thread does them all.
 */
void
writer_cancel(struct writer_job *wj)
{
	pthread_mutex_lock(&writer_lock);
	wj->wj_cancelled = 1;
	pthread_mutex_unlock(&writer_lock);
}
