/*
 * order.h: what order.c and order_cluster.c share of one certificate.
 * Private to those two files; the rest of the daemon sees struct cert
 * only through sidecar.h's order_* functions.
 */
#ifndef ORDER_H
#define ORDER_H

struct cert {
	struct event_base	*ce_base;
	struct acme_issuer	*ce_issuer;
	char			*ce_id;
	char			**ce_idents;
	size_t			 ce_nidents;
	enum key_type		 ce_key;
	enum order_state	 ce_state;

	/* The certificate in use, if any. */
	int			 ce_have;
	time_t			 ce_not_before;
	time_t			 ce_not_after;
	time_t			 ce_renew_at;
	unsigned char		 ce_chain_md[32];	/* SHA-256 of its PEM */

	/* The order in progress. */
	char			*ce_order_url;
	char			*ce_finalize_url;
	char			*ce_cert_url;
	char			**ce_authz;
	size_t			 ce_nauthz;
	size_t			 ce_authz_next;
	char			*ce_token;	/* registered with challenge.c */
	char			*ce_alpn_ident;	/* tls-alpn-01's, with alpn.c */
	char			*ce_alpn_keyauth;
	char			*ce_authz_ident;	/* of the authz worked */
	struct ready_check	*ce_ready;	/* order_challenge()'s check */
	int			 ce_order_open;	/* see acme_order_close() */
	int			 ce_polls;
	EVP_PKEY		*ce_new_key;
	char			*ce_stored_chain;	/* the chain being */
	X509			*ce_stored_leaf;	/* (its first, parsed) */
	time_t			 ce_stored_nb;		/* written, and its */
	time_t			 ce_stored_na;		/* dates */
	int			 ce_store_tries;	/* failed writes */
	int			 ce_resumed;	/* order from pending/ */
	char			**ce_alternates;	/* Link rel="alternate" */
	size_t			 ce_alt_next;
	char			*ce_default_chain;

	struct acme_req		*ce_req;
	struct writer_job	*ce_job;
	struct event		*ce_timer;
	time_t			 ce_timer_at;	/* when ce_timer fires */
	int			 ce_failures;
	int			 ce_lost_reordered;	/* since the last issue */
	char			*ce_last_error;
	time_t			 ce_last_error_at;

	/*
	 * Several replicas (order_cluster.c): the lease this certificate's
	 * orders run under, a read or fenced write in flight, the token the
	 * other replicas serve, and a copy of another node's certificate
	 * being written to state_path.
	 */
	struct cluster_lease	*ce_lease;
	struct cluster_op	*ce_op;
	struct cluster_op	*ce_sync_op;	/* order_cluster_sync() */
	int			 ce_sync_again;	/* news during ce_sync_op */
	struct cluster_token	*ce_shared;
	char			*ce_challenge_url;	/* sent once synced */
	int			 ce_order_shared;	/* before finalize */
	time_t			 ce_stored_renew;	/* shared renewal */
	int			 ce_share_tries;
	int			 ce_lease_tries;
	int			 ce_renew_asked;	/* order_renew_now() */
	struct writer_job	*ce_cache_job;
	/* Putting back what Redis lost (order_restore()). */
	struct cluster_lease	*ce_restore_lease;
	struct cluster_op	*ce_restore_op;

	/*
	 * What newOrder says besides the identifiers: the profile (this
	 * certificate's profile=, else the issuer's) and "replaces", the
	 * CertID of the certificate in use, left out once the CA refused it.
	 * ARI (order_ari.c): what renewalInfo said of that certificate.
	 */
	char			*ce_profile;	/* profile=, or NULL */
	int			 ce_profile_warned;
	char			*ce_sent_profile;	/* in the last newOrder */
	char			*ce_cert_id;	/* CertID of the one in use */
	int			 ce_sent_replaces;	/* in this newOrder */
	int			 ce_no_replaces;	/* the CA refused it */
	int			 ce_renew_ari;	/* ce_renew_at from a window */
	struct ari_state	 ce_ari;
	struct acme_req		*ce_ari_req;
	struct event		*ce_ari_timer;
	/* With replicas: the lease one fetch is made under, and its write. */
	struct cluster_lease	*ce_ari_lease;
	struct cluster_op	*ce_ari_op;

	/*
	 * The challenge its orders answer; for dns-01, the hook that
	 * publishes the record, and the record published (order_dns.c).
	 */
	enum challenge_type	 ce_challenge;
	char			*ce_dns_hook;
	int			 ce_dns_hook_timeout;
	char			*ce_dns_update;		/* or its spec */
	char			*ce_dns_check;		/* dns_check, or NULL */
	struct order_dns	*ce_dns;
	int			 ce_dns_triggered;	/* not "pending" */

	/* A revocation asked through the control API (order_revoke()). */
	struct acme_req		*ce_revoke_req;
	const char		*ce_revoke_reason;	/* static name */
	order_revoke_cb		 ce_revoke_cb;
	void			*ce_revoke_arg;
};

/* order.c */
void		 order_set_state(struct cert *, enum order_state);
void		 order_arm(struct cert *, double);
void		 order_drive(struct cert *);
void		 order_challenge(struct cert *);
void		 order_reset(struct cert *);
void		 order_fail(struct cert *, int, time_t, const char *);
void		 order_begin_new(struct cert *);
void		 order_schedule_renewal(struct cert *, time_t);
void		 order_store_write(struct cert *);
void		 order_store_failed(struct cert *, const char *);
void		 order_log_time(char *, size_t, time_t);
void		 order_publish(struct cert *, char *const *, size_t,
		    const char *chain, EVP_PKEY *, time_t, time_t);
void		 order_chain_digest(const char *, unsigned char [32]);
int		 order_renew_due(const struct cert *);
int		 order_idents_match(const struct cert *, char *const *, size_t,
		    enum key_type);
void		 order_strv_free(char **, size_t);

/* order_ari.c */
void		 order_ari_init(struct cert *);
void		 order_ari_free(struct cert *);
void		 order_ari_adopt(struct cert *, const char *chain, X509 *leaf);
void		 order_ari_adopt_id(struct cert *, char *id);
time_t		 order_ari_renew_at(const struct cert *);
void		 order_ari_arm(struct cert *);
void		 order_ari_shared(struct cert *, const struct ari_state *);
void		 order_ari_cancel(struct cert *);
int		 order_ari_busy(const struct cert *);

/* order_dns.c */
char		*order_dns_txt(const char *keyauth);
char		*order_dns_fqdn(const char *ident);
void		 order_dns_present(struct cert *, const char *ident,
		    const char *keyauth);
void		 order_dns_clear(struct cert *);
const char	*order_dns_name(const struct cert *);	/* or NULL */
const char	*order_dns_value(const struct cert *);
void		 order_dns_published(struct cert *, int, const char *);

/* order_cluster.c */
void		 order_lease(struct cert *);
void		 order_sync(struct cert *);
void		 order_share_order(struct cert *);
void		 order_share_cert(struct cert *);
void		 order_cluster_reset(struct cert *);
void		 order_cluster_free(struct cert *);
void		 order_cluster_done(struct cert *);

#endif /* ORDER_H */
