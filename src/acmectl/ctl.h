/*
 * acmectl: its one private header.
 *
 * Each section belongs to one file; every function carries the prefix
 * ctl_.  The contract with the daemon is proto/control-api.md.
 */
#ifndef CTL_H
#define CTL_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#define CTL_VERSION		"0.1.0"

/* The options of the command line, as main parsed them. */
struct ctl_opts {
	const char	*o_socket;
	int		 o_given;	/* CTL_OPT_* bits */
	int		 o_json;
	int		 o_all;		/* renew --all */
	int		 o_nowait;
	int		 o_timeout;	/* seconds */
	const char	*o_key;
	const char	*o_reason;
	const char	*o_profile;	/* add --profile */
	const char	*o_challenge;	/* add --challenge */
	int		 o_yes;		/* account deactivate --yes */
	int		 o_help;	/* -h, --help */
};

/* A response read whole, split by ctl_exchange. */
struct ctl_response {
	int		 rs_status;
	char		 rs_reason[128];
	const char	*rs_body;	/* points into the raw buffer */
	size_t		 rs_bodylen;
};

/* An order being waited for: add, renew. */
struct ctl_wait {
	char		*w_id;
	char		*w_path;	/* GET /v1/certificates/{id} */
	json_t		*w_cert;	/* its latest state */
	char		*w_before;	/* not_before as the order started */
	int		 w_busy;	/* seen in a state other than idle */
	int		 w_done;	/* 0 under way, 1 valid, -1 failed */
};

/* ctl_util.c: memory, where running out ends acmectl, and the clock. */
void		 ctl_fatalx(const char *, ...)
		     __attribute__((noreturn, format(printf, 1, 2)));
char		*ctl_xasprintf(const char *, ...)
		     __attribute__((format(printf, 1, 2)));
void		*ctl_xreallocarray(void *, size_t, size_t);
char		*ctl_xstrdup(const char *);
long long	 ctl_now_ms(void);	/* monotonic */

/*
 * ctl_http.c: one HTTP/1.1 exchange over the Unix socket, its answer
 * parsed strictly, and the chunked event stream.
 */
char		*ctl_cert_path(const char *, const char *);
char		*ctl_issuer_path(const char *, const char *);
int		 ctl_exchange(const char *, const char *, const char *,
		     const char *, char **, struct ctl_response *, char **);
int		 ctl_call(const char *, const char *, const char *, json_t *,
		     json_t **, char **);
/* One event: parsed, and its line as it came (not NUL-terminated). */
typedef int	 (*ctl_event_cb)(json_t *, const char *, size_t, void *,
		     char **);
int		 ctl_events(const char *, ctl_event_cb, void *, char **);

/* ctl_out.c: what the user reads on stdout: tables, JSON, events. */
const char	*ctl_scalar(json_t *, char *, size_t);
const char	*ctl_field(json_t *, const char *, char *, size_t);
void		 ctl_print_json(json_t *);
void		 ctl_print_issuers(json_t *);
void		 ctl_print_uptime(json_int_t);
void		 ctl_print_cluster(json_t *);
void		 ctl_print_certs(json_t *);
void		 ctl_output_cert(const struct ctl_opts *, json_t *);
void		 ctl_print_event(json_t *);
void		 ctl_output_account(const struct ctl_opts *, json_t *);

/* ctl_wait.c: following orders to their end, progress on stderr. */
int		 ctl_wait_init(struct ctl_wait *, json_t *, int, char **);
void		 ctl_wait_free(struct ctl_wait *);
char		*ctl_wait_error(const struct ctl_wait *);
int		 ctl_wait_run(const struct ctl_opts *, struct ctl_wait *,
		     size_t, int, char **);
int		 ctl_wait_one(const struct ctl_opts *, json_t *, int,
		     char **);

#endif /* CTL_H */
