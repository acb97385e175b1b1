/* Resolves each argument with getaddrinfo() and prints the first address. Built with `gcc -static`
 * by .ci/build-images.sh and run in a FROM scratch image: the same static glibc resolver the
 * connector's HTTP client (reqwest's default getaddrinfo resolver) uses there. */
#include <stdio.h>
#include <netdb.h>
#include <string.h>
#include <arpa/inet.h>
int main(int argc, char **argv) {
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(argv[i], "443", &hints, &res);
    if (e) { printf("%s: FAIL %s\n", argv[i], gai_strerror(e)); rc = 1; continue; }
    char buf[64];
    void *a = res->ai_family == AF_INET ? (void*)&((struct sockaddr_in*)res->ai_addr)->sin_addr : (void*)&((struct sockaddr_in6*)res->ai_addr)->sin6_addr;
    inet_ntop(res->ai_family, a, buf, sizeof buf);
    printf("%s: %s\n", argv[i], buf);
    freeaddrinfo(res);
  }
  return rc;
}
