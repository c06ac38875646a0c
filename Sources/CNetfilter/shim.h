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

static inline uint32_t ctsync_nlmsg_header_size(void) { return (uint32_t)MNL_NLMSG_HDRLEN; }
static inline uint32_t ctsync_nfgenmsg_size(void) { return (uint32_t)MNL_ALIGN(sizeof(struct nfgenmsg)); }
static inline int ctsync_errno(void) { return errno; }
extern int setns(int fd, int nstype);
#ifndef CLONE_NEWNET
#define CLONE_NEWNET 0x40000000
#endif
/// Moves the calling thread into the network namespace open at `fd`.
static inline int ctsync_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

#endif
