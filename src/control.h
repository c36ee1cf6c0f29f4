/*
 * control.h: what the files of the control API share; nothing else
 * includes it.
 *
 *   control.c         the transport: the socket, who may connect and how
 *                     often, who may read or change, the body, dispatch,
 *                     replies, and requests that wait for the CA
 *   control_routes.c  the routes: one table, one handler per row; and
 *                     the services that run beside them
 *   control_stream.c  GET /v1/events: the streams, their limits and timers
 *
 * So a new route touches control_routes.c alone.
 */
#ifndef CONTROL_H
#define CONTROL_H

#include <microhttpd.h>

enum control_access {
	CONTROL_READ,		/* root, our uid, the socket's group */
	CONTROL_CHANGE		/* root and our uid */
};

/*
 * One request: its body and, once a request that waited for the CA is
 * answered, that answer.
 */
struct control_req {
	struct MHD_Connection	*cr_conn;
	char			*cr_body;
	size_t			 cr_len;
	int			 cr_too_big;
	/* Waiting (control_wait()): what to undo if the daemon stops. */
	void			(*cr_cancel)(struct control_req *);
	struct cert		*cr_revoking;	/* suspended for it */
	struct acme_issuer	*cr_account;	/* suspended for its account */
	const char		*cr_reason;	/* its RFC 5280 name */
	json_t			*cr_answer;	/* then this ... */
	unsigned int		 cr_status;	/* ... with this status */
	TAILQ_ENTRY(control_req) cr_entry;
};
TAILQ_HEAD(control_reqs, control_req);

/* One connection, from accept to close: whose it is. */
struct control_conn {
	struct MHD_Connection	*cn_conn;
	uid_t			 cn_uid;
	int			 cn_privileged;	/* root or our uid */
	TAILQ_ENTRY(control_conn) cn_entry;
};
TAILQ_HEAD(control_conns, control_conn);

struct control_ctx {
	struct MHD_Connection	*cx_conn;
	struct control_req	*cx_req;
	const char		*cx_id;		/* the {id} segment, or NULL */
	json_t			*cx_body;	/* the JSON object, or NULL */
};

struct control_route {
	const char		*cr_method;
	const char		*cr_path;
	enum control_access	 cr_access;
	const char *const	*cr_fields;	/* of the body, NULL: none */
	enum MHD_Result		(*cr_handler)(struct control_ctx *);
};
/*
 * What runs beside the routes for as long as the API does (the event
 * streams' timer): started after the transport, stopped before it wakes
 * what still waits, as libmicrohttpd cannot stop with connections
 * suspended.
 */
struct control_service {
	int			(*cs_start)(struct event_base *, char **);
	void			(*cs_stop)(void);
};

/* control_routes.c: the tables through which control.c reaches above. */
extern const struct control_route control_routes[];
extern const size_t control_nroutes;
extern const struct control_service control_services[];
extern const size_t control_nservices;

/* control.c */
struct control_conn *control_conn_of(struct MHD_Connection *);
const struct control_hooks *control_hooks(void);
time_t		 control_uptime(void);		/* seconds */
void		 control_wake(void);		/* after a resume */
enum MHD_Result	 control_send(struct MHD_Connection *, unsigned int status,
		    char *text, size_t, const char *type, const char *name,
		    const char *value);
enum MHD_Result	 control_reply(struct MHD_Connection *, unsigned int status,
		    json_t *, const char *name, const char *value);
json_t		*control_message(const char *);	/* UTF-8 or '?' */
json_t		*control_error_json(unsigned int status, const char *);
enum MHD_Result	 control_error(struct MHD_Connection *, unsigned int status,
		    const char *allow, const char *fmt, ...) PRINTFLIKE(4, 5);
void		 control_wait(struct control_ctx *,
		    void (*cancel)(struct control_req *));
void		 control_answer(struct control_req *, unsigned int status,
		    json_t *);

/* control_routes.c: one certificate, as a tree and as the list's line. */
struct textbuf;
json_t		*control_cert_info_json(const struct order_info *, int valid,
		    enum challenge_type);
void		 control_cert_line(struct textbuf *, const struct order_info *,
		    int valid, enum challenge_type);

/* control_stream.c */
enum MHD_Result	 control_get_events(struct control_ctx *);
int		 control_stream_start(struct event_base *, char **);
void		 control_stream_stop(void);

#endif /* CONTROL_H */
