// Sends its third argument as one UDP datagram to the address and port
// given as the first two, three times, for tests of what may reach the host.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)atoi(argv[2]));
    if (fd < 0 || inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) return 1;
    for (int i = 0; i < 3; i++) {
        if (sendto(fd, argv[3], strlen(argv[3]), 0, (struct sockaddr *)&address, sizeof(address)) < 0) { perror("udp-send"); return 1; }
        usleep(100000);
    }
    return 0;
}
