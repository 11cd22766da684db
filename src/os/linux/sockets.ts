import { type VirtAddr, hex, va } from "../../util/address.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";
import { checkKernelPointer } from "./walk.js";

/**
 * The socket behind an open file: `file->private_data` is the `struct socket`, its `sk` the
 * `struct sock` whose `__sk_common` holds family, state, addresses and ports, as
 * /proc/net/{tcp,tcp6,udp,udp6,unix,netlink,packet} print them (net/ipv4/tcp_ipv4.c
 * `get_tcp4_sock()`, net/ipv6/tcp_ipv6.c, net/ipv4/udp.c, net/unix/af_unix.c `unix_seq_show()`,
 * net/netlink/af_netlink.c `netlink_seq_show()`, net/packet/af_packet.c `packet_seq_show()`).
 */
export interface SocketInfo {
  /** The `struct sock`: the same for every fd that shares the socket. */
  readonly sock: VirtAddr;
  /** tcp, tcp6, udp, udp6, raw, raw6, unix, netlink, packet, or "family N". */
  readonly proto: string;
  /**
   * "127.0.0.1:7070", "[::1]:7072", a unix socket's path ("@name" if abstract, "" unbound);
   * for netlink "protocol 0 portid 812 groups 00000011" and for packet "type 3 proto 0003
   * ifindex 1": the columns /proc/net/{netlink,packet} print (they have no address), as printed.
   */
  readonly local: string;
  /** The peer for inet sockets ("0.0.0.0:0" when none); "" for the others. */
  readonly remote: string;
  /**
   * TCP state names for inet sockets (UDP uses them too); LISTEN/CONNECTED/UNCONNECTED... for
   * unix; "" for netlink and packet, whose /proc/net files show no state.
   */
  readonly state: string;
}

const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
const AF_PACKET = 17;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const TCP_ESTABLISHED = 1;
const TCP_LISTEN = 10;

/** include/net/tcp_states.h, from TCP_ESTABLISHED (1). */
const TCP_STATES = [
  "UNKNOWN",
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "FIN_WAIT1",
  "FIN_WAIT2",
  "TIME_WAIT",
  "CLOSE",
  "CLOSE_WAIT",
  "LAST_ACK",
  "LISTEN",
  "CLOSING",
  "NEW_SYN_RECV",
  "BOUND_INACTIVE",
];

function off(ctx: KernelContext, struct: string, path: string): bigint {
  return BigInt(ctx.layout.offsetof(struct, path));
}

/** A 16-bit value kept in network order, as read little-endian. */
const ntohs = (be: number) => ((be & 0xff) << 8) | (be >> 8);

const ipv4 = (b: Buffer) => `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;

/** RFC 5952 text of an IPv6 address: lower-case groups, the longest run of 2+ zero groups as "::". */
export function ipv6Text(b: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  const text = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (best.at < 0) return text(groups);
  return `${text(groups.slice(0, best.at))}::${text(groups.slice(best.at + best.len))}`;
}

function protoName(family: number, protocol: number): string {
  const v6 = family === AF_INET6 ? "6" : "";
  if (family === AF_INET || family === AF_INET6)
    return protocol === IPPROTO_TCP ? `tcp${v6}` : protocol === IPPROTO_UDP ? `udp${v6}` : `raw${v6}`;
  if (family === AF_UNIX) return "unix";
  if (family === AF_NETLINK) return "netlink";
  if (family === AF_PACKET) return "packet";
  return `family ${family}`;
}

/** `unix_seq_show()`'s path: sun_path of `unix_sk(sk)->addr`, NULs shown as "@". */
function unixPath(ctx: KernelContext, sock: VirtAddr): string {
  const addrAt = ctx.layout.findOffset("unix_sock", "addr");
  if (addrAt === undefined) return "";
  const addr = ctx.kernel.readU64(va(sock + BigInt(addrAt)));
  if (addr === 0n) return "";
  const a = checkKernelPointer(addr, ctx.bounds, `unix_sock.addr of ${hex(sock)}`);
  const len = ctx.kernel.readU32(va(a + off(ctx, "unix_address", "len")));
  // sockaddr_un: a 2-byte family, then at most 108 bytes of path.
  const pathLen = Math.min(Math.max(len - 2, 0), 108);
  const bytes = Buffer.from(ctx.kernel.read(va(a + off(ctx, "unix_address", "name") + 2n), pathLen));
  // A pathname address counts its NUL; an abstract one starts with NUL, shown as "@".
  const shown = bytes[0] === 0 ? bytes : bytes.subarray(0, Math.max(bytes.length - 1, 0));
  for (let i = 0; i < shown.length; i++) if (shown[i] === 0) shown[i] = 0x40;
  return decodeGuestBytes(shown);
}

/** The socket of a socket file (`file->private_data`), as /proc/net shows it. */
export function readSocket(ctx: KernelContext, file: VirtAddr): SocketInfo {
  const k = ctx.kernel;
  const socket = checkKernelPointer(
    k.readU64(va(file + off(ctx, "file", "private_data"))),
    ctx.bounds,
    `private_data of socket file ${hex(file)}`,
  );
  const sock = checkKernelPointer(
    k.readU64(va(socket + off(ctx, "socket", "sk"))),
    ctx.bounds,
    `sk of socket ${hex(socket)}`,
  );
  const common = (m: string) => va(sock + off(ctx, "sock", `__sk_common.${m}`));
  const family = k.readU16(common("skc_family"));
  const state = k.read(common("skc_state"), 1)[0]!;
  const protocol = k.readU16(va(sock + off(ctx, "sock", "sk_protocol")));
  const proto = protoName(family, protocol);
  if (family === AF_INET || family === AF_INET6) {
    const addr =
      family === AF_INET
        ? (m: string) => ipv4(k.read(common(m), 4))
        : (m: string) => `[${ipv6Text(k.read(common(m), 16))}]`;
    const [local, remote] =
      family === AF_INET ? ["skc_rcv_saddr", "skc_daddr"] : ["skc_v6_rcv_saddr", "skc_v6_daddr"];
    return {
      sock,
      proto,
      local: `${addr(local!)}:${k.readU16(common("skc_num"))}`,
      remote: `${addr(remote!)}:${ntohs(k.readU16(common("skc_dport")))}`,
      state: TCP_STATES[state] ?? `state ${state}`,
    };
  }
  if (family === AF_UNIX) {
    const socketState = k.readU64(va(sock + off(ctx, "sock", "sk_socket"))) !== 0n;
    const unixState =
      state === TCP_LISTEN
        ? "LISTEN"
        : socketState
          ? state === TCP_ESTABLISHED
            ? "CONNECTED"
            : "UNCONNECTED"
          : state === TCP_ESTABLISHED
            ? "CONNECTING"
            : "DISCONNECTING";
    return { sock, proto, local: unixPath(ctx, sock), remote: "", state: unixState };
  }
  if (family === AF_NETLINK)
    return { sock, proto, local: netlinkLocal(ctx, sock, protocol), remote: "", state: "" };
  if (family === AF_PACKET) return { sock, proto, local: packetLocal(ctx, sock), remote: "", state: "" };
  return { sock, proto, local: "", remote: "", state: TCP_STATES[state] ?? `state ${state}` };
}

/** `netlink_seq_show()`'s Eth, Pid and Groups: only the first word of the group bitmap shows. */
function netlinkLocal(ctx: KernelContext, sock: VirtAddr, protocol: number): string {
  const k = ctx.kernel;
  const nlk = sock - off(ctx, "netlink_sock", "sk");
  const portid = k.readU32(va(nlk + off(ctx, "netlink_sock", "portid")));
  const bitmap = k.readU64(va(nlk + off(ctx, "netlink_sock", "groups")));
  const groups =
    bitmap === 0n
      ? 0
      : k.readU32(va(checkKernelPointer(bitmap, ctx.bounds, `netlink_sock.groups of ${hex(sock)}`)));
  return `protocol ${protocol} portid ${portid} groups ${groups.toString(16).padStart(8, "0")}`;
}

/** `packet_seq_show()`'s Type, Proto (`po->num`, network order) and Iface. */
function packetLocal(ctx: KernelContext, sock: VirtAddr): string {
  const k = ctx.kernel;
  const po = sock - off(ctx, "packet_sock", "sk");
  const type = k.readU16(va(sock + off(ctx, "sock", "sk_type")));
  const num = k.readU16(va(po + off(ctx, "packet_sock", "num")));
  const ifindex = k.readU32(va(po + off(ctx, "packet_sock", "ifindex"))) | 0;
  const proto = ntohs(num).toString(16).padStart(4, "0");
  return `type ${type} proto ${proto} ifindex ${ifindex}`;
}
