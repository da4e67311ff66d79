// Answers each UDP datagram on the port given as the argument with
// "echo:" and the datagram, for tests of published UDP ports.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)atoi(argv[1]));
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0) { perror("udp-echo"); return 1; }
    printf("listening\n");
    fflush(stdout);
    for (;;) {
        char buffer[1024];
        memcpy(buffer, "echo:", 5);
        struct sockaddr_in peer;
        socklen_t length = sizeof(peer);
        ssize_t count = recvfrom(fd, buffer + 5, sizeof(buffer) - 5, 0, (struct sockaddr *)&peer, &length);
        if (count < 0) return 1;
        sendto(fd, buffer, (size_t)count + 5, 0, (struct sockaddr *)&peer, length);
    }
}
