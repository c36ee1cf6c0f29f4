/*
 * dns_publish: a dns-01 TXT record added or removed through the issuer's
 * publisher, dns_hook (dns_hook.c) or dns_update (dns_update.c).  Each
 * runs its jobs one at a time, in the order asked (dns_update: for each
 * server and zone), and an issuer has exactly one (conf.c), so a
 * wildcard's "del" still reaches the DNS before its apex's "add" of the
 * same name.
 */
#include <string.h>

#include "sidecar.h"

/* As dns_hook_run() and dns_update_run(): cb never before this returns. */
struct dns_publish_job
dns_publish_run(struct event_base *base, const struct dns_publisher *dp,
    const char *verb, const char *fqdn, const char *value, dns_hook_cb cb,
    void *arg)
{
	struct dns_publish_job	pj;

	memset(&pj, 0, sizeof(pj));
	if (dp->dp_update != NULL)
		pj.pj_update = dns_update_run(base, dp->dp_update, verb, fqdn,
		    value, cb, arg);
	else if (dp->dp_hook != NULL)
		pj.pj_hook = dns_hook_run(base, dp->dp_hook,
		    dp->dp_hook_timeout, verb, fqdn, value, cb, arg);
	else
		fatalx("%s: no publisher for TXT %s", __func__, fqdn);
	return pj;
}

/* The job runs on; its callback is not called. */
void
dns_publish_forget(struct dns_publish_job *pj)
{
	dns_hook_forget(pj->pj_hook);
	dns_update_forget(pj->pj_update);
	memset(pj, 0, sizeof(*pj));
}
