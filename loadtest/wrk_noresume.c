/* Preloaded into wrk (LD_PRELOAD) by loadtest/harness.py: every TLS connection wrk opens is a full handshake.
 *
 * Why: wrk (4.1.0, src/ssl.c) closes a TLS connection with SSL_shutdown + SSL_clear and keeps the SSL
 * object for the connection it opens next. SSL_clear keeps a cleanly shut down session, so the next
 * SSL_connect offers it (a TLS 1.3 PSK from the server's session ticket) and the server resumes: with
 * `Connection: close` nginx logged 4 full handshakes and 528 resumed ones in 1 s over 4 connections.
 * Dropping the session before SSL_clear makes each SSL_connect start without one.
 *
 * Both libssl functions are looked up at run time (no OpenSSL headers or link needed), so the library
 * also loads into processes without libssl, such as the `taskset` that starts wrk.
 * Built per run: cc -shared -fPIC -O2 -o wrk_noresume.so wrk_noresume.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef int (*ssl_clear_fn)(void *ssl);
typedef int (*ssl_set_session_fn)(void *ssl, void *session);

int SSL_clear(void *ssl) {
    /* wrk runs one thread here (-t1); a race would only look the same symbols up twice */
    static ssl_clear_fn clear = NULL;
    static ssl_set_session_fn set_session = NULL;
    if (clear == NULL) {
        set_session = (ssl_set_session_fn) dlsym(RTLD_NEXT, "SSL_set_session");
        clear = (ssl_clear_fn) dlsym(RTLD_NEXT, "SSL_clear");
    }
    if (set_session != NULL) {
        set_session(ssl, NULL); /* frees this SSL's reference to the session: nothing left to resume */
    }
    return clear != NULL ? clear(ssl) : 0;
}
