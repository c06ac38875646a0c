// The one C header ctsync sees: libmnl for sockets and message batches,
// libnetfilter_conntrack for building and parsing conntrack objects.
// Small inline helpers live here only where a C macro or a packed struct
// would be awkward from Swift.
#ifndef CTSYNC_CNETFILTER_SHIM_H
#define CTSYNC_CNETFILTER_SHIM_H

#include <fcntl.h>
#include <unistd.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

/// Writes a netlink + nfgenmsg header for a ctnetlink request at `buf`.
static inline struct nlmsghdr *ctsync_put_ct_header(void *buf, uint8_t msgType,
                                                    uint16_t flags, uint32_t seq,
                                                    uint8_t family) {
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | msgType;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    struct nfgenmsg *nfh = mnl_nlmsg_put_extra_header(nlh, sizeof(struct nfgenmsg));
    nfh->nfgen_family = family;
    nfh->version = NFNETLINK_V0;
    nfh->res_id = 0;
    return nlh;
}

/// The same for an expectation request (ctnetlink_exp).
static inline struct nlmsghdr *ctsync_put_exp_header(void *buf, uint8_t msgType,
                                                     uint16_t flags, uint32_t seq,
                                                     uint8_t family) {
    struct nlmsghdr *nlh = ctsync_put_ct_header(buf, msgType, flags, seq, family);
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK_EXP << 8) | msgType;
    return nlh;
}

static inline uint32_t ctsync_nlmsg_header_size(void) { return (uint32_t)MNL_NLMSG_HDRLEN; }
static inline uint32_t ctsync_nfgenmsg_size(void) { return (uint32_t)MNL_ALIGN(sizeof(struct nfgenmsg)); }
static inline int ctsync_errno(void) { return errno; }
extern int setns(int fd, int nstype);
#ifndef CLONE_NEWNET
#define CLONE_NEWNET 0x40000000
#endif
/// Moves the calling thread into the network namespace open at `fd`.
static inline int ctsync_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

/// Attaches a socket filter that drops, in the kernel, every netlink message whose header
/// carries `port` as its port id (nlmsg_pid: for an event, the socket whose request caused it).
/// An event socket then never receives, and never overflows with, the events of the daemon's own
/// writes. Returns 0 or -errno.
static inline int ctsync_attach_port_filter(int fd, uint32_t port) {
    /* BPF loads are big-endian; the netlink header is in host order. */
    uint32_t loaded = ((port & 0xff) << 24) | ((port & 0xff00) << 8) | ((port >> 8) & 0xff00) | (port >> 24);
    if (*(const uint8_t *)&(uint16_t){1} == 0) loaded = port; /* a big-endian host loads it as it is */
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 12),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, loaded, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
    };
    struct sock_fprog program = { .len = 4, .filter = code };
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) < 0) return -errno;
    return 0;
}

/// glibc's `struct mmsghdr` (declared only with _GNU_SOURCE, so recvmmsg is called by number).
struct ctsync_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

/// The most datagrams `ctsync_receive_batch` takes in one call.
#define CTSYNC_RECEIVE_BATCH_MAX 64

/// Receives, without waiting, up to `count` (at most CTSYNC_RECEIVE_BATCH_MAX) netlink datagrams
/// in one system call (recvmmsg): datagram i lands at `buffer + i * slot_size`. `lengths[i]` is
/// its length, -1 if it did not fit its slot (cut: the caller must treat it as lost), -2 if it
/// did not come from the kernel (port id not 0: to be ignored). Returns the number received (0:
/// nothing queued), or -errno (-ENOBUFS: the kernel dropped messages for this socket).
static inline int ctsync_receive_batch(int fd, uint8_t *buffer, unsigned slot_size, unsigned count, int *lengths) {
    struct ctsync_mmsghdr messages[CTSYNC_RECEIVE_BATCH_MAX];
    struct iovec vectors[CTSYNC_RECEIVE_BATCH_MAX];
    struct sockaddr_nl senders[CTSYNC_RECEIVE_BATCH_MAX];
    if (count > CTSYNC_RECEIVE_BATCH_MAX) count = CTSYNC_RECEIVE_BATCH_MAX;
    memset(messages, 0, sizeof(messages[0]) * count);
    for (unsigned i = 0; i < count; i++) {
        vectors[i].iov_base = buffer + (size_t)i * slot_size;
        vectors[i].iov_len = slot_size;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_name = &senders[i];
        messages[i].msg_hdr.msg_namelen = sizeof(senders[i]);
    }
    int n;
    do {
        n = (int)syscall(SYS_recvmmsg, fd, messages, count, MSG_DONTWAIT, (void *)0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        if (messages[i].msg_hdr.msg_flags & MSG_TRUNC) lengths[i] = -1;
        else if (senders[i].nl_pid != 0) lengths[i] = -2;
        else lengths[i] = (int)messages[i].msg_len;
    }
    return n;
}

#endif
