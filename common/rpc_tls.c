/* rpc_tls: credentials of the gRPC glue (see rpc.h): TLS files, server and client
 * credentials, and bearer tokens.
 *
 * API, in order: gy__rpc_pem_server_free, gy__rpc_pem_server_load, gy__rpc_pem_server_creds
 * (for rpc_server.c), gy__rpc_server_tls_default_get, gy_rpc_server_tls_check,
 * gy_rpc_server_tls_default; gy__rpc_client_creds (for rpc_client.c); gy_rpc_token_equal,
 * gy_rpc_token_check, gy_rpc_token_read_file.
 *
 * Either side is plaintext unless given TLS options. Certificate, key and CA files are read
 * and parsed with OpenSSL when the server or client is created, so a missing, unreadable or
 * non-PEM file, an encrypted key or a key that does not belong to its certificate fails there,
 * naming the file, not at the first handshake. The server's client_auth asks for and verifies
 * a client certificate (mutual TLS): a client without one, or with one from another CA, fails
 * the handshake and never reaches a handler.
 *
 * Invariants: private key text is zeroed before it is freed; the process default of the
 * server TLS is set before servers are created, from one thread (gy_rpc_server_tls_default),
 * and only read afterwards.
 */
#include "common/rpc_internal.h"

#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* PEM files are read whole and parsed with OpenSSL (the library gRPC itself uses here) before
 * gRPC sees them, so that a wrong file is named at start instead of failing every handshake
 * later. A file larger than this is not a certificate bundle. */
#define PEM_MAX (1u << 20)

typedef enum { PEM_CERTS, PEM_KEY } pem_kind_t;

/* Refuses to prompt for the pass phrase of an encrypted key: gyro takes unencrypted keys. */
static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}

/* Reads the PEM file `path` (the option `what`, for messages) into *out (malloc'ed,
 * NUL-terminated; caller frees) and checks it holds at least one certificate (PEM_CERTS) or an
 * unencrypted private key (PEM_KEY). GY_EIO (cannot read) or GY_EINVAL (not PEM of that kind). */
static int pem_read(const char *what, const char *path, pem_kind_t kind, char **out, char *errmsg,
                    size_t errlen) {
  *out = NULL;
  char *buf = NULL;
  int rc = GY_EIO;
  FILE *f = fopen(path, "rb");
  if (!f) {
    gy_errmsg(errmsg, errlen, "%s %s: cannot open: %s", what, path, strerror(errno));
    goto err;
  }
  if (!(buf = malloc(PEM_MAX + 1))) {
    rc = GY_ENOMEM;
    gy_errmsg(errmsg, errlen, "%s %s: out of memory", what, path);
    goto err;
  }
  size_t n = fread(buf, 1, PEM_MAX + 1, f);
  if (ferror(f)) {
    gy_errmsg(errmsg, errlen, "%s %s: cannot read: %s", what, path, strerror(errno));
    goto err;
  }
  rc = GY_EINVAL;
  if (n > PEM_MAX) {
    gy_errmsg(errmsg, errlen, "%s %s: larger than %u bytes: not a PEM file", what, path, PEM_MAX);
    goto err;
  }
  buf[n] = '\0';
  if (memchr(buf, '\0', n)) {
    gy_errmsg(errmsg, errlen, "%s %s: binary data: not a PEM file", what, path);
    goto err;
  }
  BIO *bio = BIO_new_mem_buf(buf, (int)n);
  if (!bio) {
    rc = GY_ENOMEM;
    gy_errmsg(errmsg, errlen, "%s %s: out of memory", what, path);
    goto err;
  }
  int good = 0;
  if (kind == PEM_CERTS) {
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, no_password, NULL))) {
      good++;
      X509_free(x);
    }
  } else {
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    good = k != NULL;
    EVP_PKEY_free(k);
  }
  BIO_free(bio);
  ERR_clear_error();
  if (!good) {
    gy_errmsg(errmsg, errlen, "%s %s: %s", what, path,
              kind == PEM_CERTS ? "no PEM certificate in it"
                                : "no PEM private key in it (or an encrypted one: gyro needs the "
                                  "key unencrypted)");
    goto err;
  }
  fclose(f);
  *out = buf;
  return 0;
err:
  if (f) fclose(f);
  free(buf);
  return rc;
}

/* Checks that key_pem is the private key of the first certificate of cert_pem. */
static int pem_pair_check(const char *cert_path, const char *cert_pem, const char *key_path,
                          const char *key_pem, char *errmsg, size_t errlen) {
  BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
  X509 *x = cb ? PEM_read_bio_X509(cb, NULL, no_password, NULL) : NULL;
  EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL) : NULL;
  int ok = x && k && X509_check_private_key(x, k) == 1;
  X509_free(x);
  EVP_PKEY_free(k);
  BIO_free(cb);
  BIO_free(kb);
  ERR_clear_error();
  if (ok) return 0;
  gy_errmsg(errmsg, errlen, "key %s is not the private key of certificate %s", key_path, cert_path);
  return GY_EINVAL;
}

void gy__rpc_pem_server_free(gy__rpc_pem_server_t *p) {
  free(p->cert);
  if (p->key) {
    memset(p->key, 0, strlen(p->key)); /* the private key does not linger in freed memory */
    free(p->key);
  }
  free(p->ca);
  memset(p, 0, sizeof(*p));
}

int gy__rpc_pem_server_load(gy__rpc_pem_server_t *p, const gy_rpc_server_tls_t *tls, char *errmsg,
                            size_t errlen) {
  memset(p, 0, sizeof(*p));
  int rc;
  if (!tls->cert || !*tls->cert || !tls->key || !*tls->key) {
    gy_errmsg(errmsg, errlen, "TLS: the server needs both a certificate and its key");
    return GY_EINVAL;
  }
  if (tls->client_auth && (!tls->ca || !*tls->ca)) {
    gy_errmsg(errmsg, errlen, "TLS: client authentication needs the CA of the client certificates");
    return GY_EINVAL;
  }
  if ((rc = pem_read("certificate", tls->cert, PEM_CERTS, &p->cert, errmsg, errlen)) ||
      (rc = pem_read("key", tls->key, PEM_KEY, &p->key, errmsg, errlen)) ||
      (rc = pem_pair_check(tls->cert, p->cert, tls->key, p->key, errmsg, errlen)) ||
      (tls->ca && *tls->ca &&
       (rc = pem_read("CA certificate", tls->ca, PEM_CERTS, &p->ca, errmsg, errlen)))) {
    gy__rpc_pem_server_free(p);
    return rc;
  }
  p->client_auth = tls->client_auth != 0;
  return 0;
}

grpc_server_credentials *gy__rpc_pem_server_creds(const gy__rpc_pem_server_t *p) {
  grpc_ssl_pem_key_cert_pair pair = {p->key, p->cert};
  grpc_ssl_client_certificate_request_type req =
      p->client_auth ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
      : p->ca        ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  return grpc_ssl_server_credentials_create_ex(p->ca, &pair, 1, req, NULL);
}

/* The process default of gy_rpc_server_tls_default (guarded by its caller's discipline: set
 * before servers are created, from one thread). */
static gy__rpc_pem_server_t default_tls;
static int have_default_tls;

const gy__rpc_pem_server_t *gy__rpc_server_tls_default_get(void) {
  return have_default_tls ? &default_tls : NULL;
}

int gy_rpc_server_tls_check(const gy_rpc_server_tls_t *tls, char *errmsg, size_t errlen) {
  if (!tls) return 0;
  gy__rpc_pem_server_t p;
  int rc = gy__rpc_pem_server_load(&p, tls, errmsg, errlen);
  if (!rc) gy__rpc_pem_server_free(&p);
  return rc;
}

int gy_rpc_server_tls_default(const gy_rpc_server_tls_t *tls, char *errmsg, size_t errlen) {
  gy__rpc_pem_server_t p;
  memset(&p, 0, sizeof(p));
  if (tls) {
    int rc = gy__rpc_pem_server_load(&p, tls, errmsg, errlen);
    if (rc) return rc;
  }
  if (have_default_tls) gy__rpc_pem_server_free(&default_tls);
  default_tls = p;
  have_default_tls = tls != NULL;
  return 0;
}

/* Called by rpc_client.c when a client is created. */
static int empty(const char *s) {
  return !s || !*s;
}

grpc_channel_credentials *gy__rpc_client_creds(const gy_rpc_client_tls_t *tls, int *rc,
                                               char *errmsg, size_t errlen) {
  *rc = 0;
  if (!tls || (empty(tls->ca) && empty(tls->cert) && empty(tls->key) && empty(tls->target_name)))
    return grpc_insecure_credentials_create();
  if (empty(tls->cert) != empty(tls->key)) {
    *rc = GY_EINVAL;
    gy_errmsg(errmsg, errlen, "TLS: a client certificate needs its key and a key its certificate");
    return NULL;
  }
  char *ca = NULL, *cert = NULL, *key = NULL;
  grpc_channel_credentials *creds = NULL;
  if ((!empty(tls->ca) &&
       (*rc = pem_read("CA certificate", tls->ca, PEM_CERTS, &ca, errmsg, errlen))) ||
      (!empty(tls->cert) &&
       ((*rc = pem_read("certificate", tls->cert, PEM_CERTS, &cert, errmsg, errlen)) ||
        (*rc = pem_read("key", tls->key, PEM_KEY, &key, errmsg, errlen)) ||
        (*rc = pem_pair_check(tls->cert, cert, tls->key, key, errmsg, errlen)))))
    goto out;
  grpc_ssl_pem_key_cert_pair pair = {key, cert};
  creds = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
  if (!creds) {
    *rc = GY_EINVAL;
    gy_errmsg(errmsg, errlen, "TLS: gRPC refused the client credentials");
  }
out:
  free(ca);
  free(cert);
  if (key) memset(key, 0, strlen(key));
  free(key);
  return creds;
}

/* ==================================== tokens ==================================== */

int gy_rpc_token_equal(const char *a, const char *b) {
  if (!a || !b) return 0;
  unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)a, strlen(a), da);
  SHA256((const unsigned char *)b, strlen(b), db);
  return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

int gy_rpc_token_check(const char *what, const char *tok, char *errmsg, size_t errlen) {
  size_t n = tok ? strlen(tok) : 0;
  if (n == 0) {
    gy_errmsg(errmsg, errlen, "%s: the token is empty", what);
    return GY_EINVAL;
  }
  if (n > GY_RPC_TOKEN_MAX) {
    gy_errmsg(errmsg, errlen, "%s: the token is longer than %d bytes", what, GY_RPC_TOKEN_MAX);
    return GY_EINVAL;
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)tok[i] <= 0x20 || (unsigned char)tok[i] >= 0x7f) {
      gy_errmsg(errmsg, errlen,
                "%s: the token holds a space, control or non-ASCII byte at offset %zu (tokens are "
                "printable ASCII)",
                what, i);
      return GY_EINVAL;
    }
  return 0;
}

int gy_rpc_token_read_file(const char *path, char **out, char *errmsg, size_t errlen) {
  *out = NULL;
  char buf[GY_RPC_TOKEN_MAX + 64];
  FILE *f = fopen(path, "rb");
  if (!f) {
    gy_errmsg(errmsg, errlen, "token file %s: cannot open: %s", path, strerror(errno));
    return GY_EIO;
  }
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  int bad = ferror(f), more = !bad && fgetc(f) != EOF;
  fclose(f);
  if (bad) {
    gy_errmsg(errmsg, errlen, "token file %s: cannot read", path);
    return GY_EIO;
  }
  int rc = 0;
  if (more) {
    gy_errmsg(errmsg, errlen, "token file %s: longer than %d bytes", path, GY_RPC_TOKEN_MAX);
    rc = GY_EINVAL;
  } else {
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
      n--;
    buf[n] = '\0';
    char what[300];
    snprintf(what, sizeof(what), "token file %s", path);
    if (memchr(buf, '\0', n)) {
      gy_errmsg(errmsg, errlen, "%s: binary data, not a token", what);
      rc = GY_EINVAL;
    } else if (!(rc = gy_rpc_token_check(what, buf, errmsg, errlen)) && !(*out = strdup(buf))) {
      gy_errmsg(errmsg, errlen, "%s: out of memory", what);
      rc = GY_ENOMEM;
    }
  }
  memset(buf, 0, sizeof(buf));
  return rc;
}
