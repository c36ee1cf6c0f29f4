/*
 * Pool of unused nonces for one issuer (RFC 8555 section 7.2).  Every
 * response carries a fresh Replay-Nonce; keeping them means newNonce is
 * only asked when the pool runs dry.  The freshest nonce is used first,
 * since a CA may expire old ones, and the oldest is dropped when full.
 */
#include <stdlib.h>
#include <string.h>

#include "sidecar.h"

struct nonce_pool {
	char	*np_ring[NONCE_POOL_MAX];
	size_t	 np_head;	/* next free slot */
	size_t	 np_count;
};

struct nonce_pool *
nonce_pool_new(void)
{
	return xcalloc(1, sizeof(struct nonce_pool));
}

void
nonce_pool_free(struct nonce_pool *np)
{
	char	*n;

	if (np == NULL)
		return;
	while ((n = nonce_take(np)) != NULL)
		free(n);
	free(np);
}

/* A nonce is base64url (RFC 8555 section 6.5.1); anything else is dropped. */
static int
nonce_valid(const char *nonce)
{
	static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t	 len = strlen(nonce);

	return len > 0 && len <= NONCE_MAX_LEN &&
	    strspn(nonce, b64url) == len;
}

/* Keep a nonce; -1 (and nothing kept) when it is not a valid one. */
int
nonce_put(struct nonce_pool *np, const char *nonce)
{
	if (!nonce_valid(nonce)) {
		log_debug("ignoring malformed Replay-Nonce");
		return -1;
	}
	/* Full: the slot at head holds the oldest nonce. */
	free(np->np_ring[np->np_head]);
	np->np_ring[np->np_head] = xstrdup(nonce);
	np->np_head = (np->np_head + 1) % NONCE_POOL_MAX;
	if (np->np_count < NONCE_POOL_MAX)
		np->np_count++;
	return 0;
}

char *
nonce_take(struct nonce_pool *np)
{
	char	*n;

	if (np->np_count == 0)
		return NULL;
	np->np_head = (np->np_head + NONCE_POOL_MAX - 1) % NONCE_POOL_MAX;
	n = np->np_ring[np->np_head];
	np->np_ring[np->np_head] = NULL;
	np->np_count--;
	return n;
}

size_t
nonce_count(const struct nonce_pool *np)
{
	return np->np_count;
}
