/*
 * dns-01 for one certificate's order (RFC 8555 8.4): the TXT record
 * "_acme-challenge.NAME." holding base64url(SHA-256(key authorization)),
 * published through the issuer's dns_hook before the CA is told to
 * validate, and removed once the authorization settles (valid or not),
 * or when the order fails, is abandoned or is freed.
 *
 * A wildcard's authorization names the domain without "*." (RFC 8555
 * 7.1.3), so "*.example.com" and "example.com" share one record name;
 * dns_hook.c runs hooks one at a time, so the first one's "del" reaches
 * the DNS before the second one's "add".  The removal is fire and
 * forget: its failure is logged, the order does not wait for it.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "sidecar.h"
#include "order.h"

struct order_dns {
	char			*od_fqdn;	/* "_acme-challenge.NAME." */
	char			*od_value;
	struct dns_hook_job	*od_add;	/* in flight, or NULL */
};

/* The TXT record's text for a key authorization; the caller frees. */
char *
order_dns_txt(const char *keyauth)
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;

	if (EVP_Digest(keyauth, strlen(keyauth), md, &mdlen, EVP_sha256(),
	    NULL) != 1)
		fatalx("%s: EVP_Digest", __func__);
	return b64url_encode(md, mdlen);
}

/* The record's name for an authorization's identifier; the caller frees. */
char *
order_dns_fqdn(const char *ident)
{
	char	*fqdn;

	if (strncmp(ident, "*.", 2) == 0)
		ident += 2;
	xasprintf(&fqdn, "_acme-challenge.%s.", ident);
	return fqdn;
}

static void
order_dns_added(int rc, const char *why, void *arg)
{
	struct cert	*ce = arg;

	ce->ce_dns->od_add = NULL;
	order_dns_published(ce, rc, why);
}

/*
 * Publish the record for ident's authorization; order_dns_published()
 * follows, never before this returns.  A record still published for an
 * earlier authorization is removed first.
 */
void
order_dns_present(struct cert *ce, const char *ident, const char *keyauth)
{
	struct order_dns	*od;

	/* conf_cert_check_challenge() refuses dns-01 without a hook. */
	if (ce->ce_dns_hook == NULL)
		fatalx("%s: certificate \"%s\" has no dns_hook", __func__,
		    ce->ce_id);
	order_dns_clear(ce);
	od = xcalloc(1, sizeof(*od));
	od->od_fqdn = order_dns_fqdn(ident);
	od->od_value = order_dns_txt(keyauth);
	ce->ce_dns = od;
	log_info("certificate \"%s\": publishing TXT %s \"%s\"", ce->ce_id,
	    od->od_fqdn, od->od_value);
	od->od_add = dns_hook_run(ce->ce_base, ce->ce_dns_hook,
	    ce->ce_dns_hook_timeout, "add", od->od_fqdn, od->od_value,
	    order_dns_added, ce);
}

/* Remove the record, if one was asked for; the order goes on at once. */
void
order_dns_clear(struct cert *ce)
{
	struct order_dns	*od = ce->ce_dns;

	if (od == NULL)
		return;
	ce->ce_dns = NULL;
	/* Its "add" still runs; the "del" is queued after it. */
	dns_hook_forget(od->od_add);
	log_info("certificate \"%s\": removing TXT %s", ce->ce_id,
	    od->od_fqdn);
	dns_hook_run(ce->ce_base, ce->ce_dns_hook, ce->ce_dns_hook_timeout,
	    "del", od->od_fqdn, od->od_value, NULL, NULL);
	free(od->od_fqdn);
	free(od->od_value);
	free(od);
}
