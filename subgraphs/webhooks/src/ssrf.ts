import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIP } from 'node:net';
import { createRequire } from 'node:module';

// ipaddr.js is CommonJS with `export =` typings: loaded through require for its types.
const ipaddr = createRequire(import.meta.url)('ipaddr.js') as typeof import('ipaddr.js');

/**
 * Why a webhook URL or one of its addresses is refused. `INVALID_URL`: not an absolute http or
 * https URL (or one with credentials); `UNRESOLVABLE`: its host has no address;
 * `PRIVATE_ADDRESS`: it resolves to an address outside the public unicast space.
 */
export type UrlProblemCode = 'INVALID_URL' | 'UNRESOLVABLE' | 'PRIVATE_ADDRESS';

/** A refused webhook URL; `code` says why (see {@link UrlProblemCode}). */
export class WebhookUrlError extends Error {
  override name = 'WebhookUrlError';
  constructor(
    readonly code: UrlProblemCode,
    message: string,
  ) {
    super(message);
  }
}

/** Cloud metadata endpoints, named for the error message (both also fall in a refused range). */
const METADATA = new Set(['169.254.169.254', 'fd00:ec2::254']);

/**
 * The ipaddr.js range of an address, IPv4-mapped IPv6 (`::ffff:10.0.0.1`) read as the IPv4
 * address it carries, so that it cannot smuggle a private IPv4 address past the check.
 */
export function addressRange(address: string): string {
  return ipaddr.process(address).range();
}

/**
 * Why an address may not receive webhooks, or undefined when it may. Only public unicast is
 * allowed: ipaddr.js's `unicast` range, i.e. everything it does not name as special. That
 * refuses loopback, private (RFC 1918), link-local (with the 169.254.169.254 metadata address),
 * unique-local (with fd00:ec2::254), carrier-grade NAT, multicast, broadcast, unspecified,
 * reserved and documentation ranges, and the IPv6 transition prefixes (6to4, Teredo, NAT64),
 * which embed an IPv4 address the check could not see.
 */
export function refusedAddress(address: string): string | undefined {
  const normalized = ipaddr.process(address).toString();
  if (METADATA.has(normalized)) return `${address} is a cloud metadata address`;
  const range = addressRange(address);
  return range === 'unicast' ? undefined : `${address} is in the ${range} range`;
}

/** Resolves a host name to every address, as `dns.lookup(host, { all: true })`. */
export type Resolver = (host: string) => Promise<LookupAddress[]>;

export const systemResolver: Resolver = (host) =>
  new Promise((resolve, reject) => dnsLookup(host, { all: true, verbatim: true }, (error, addresses) => (error ? reject(error) : resolve(addresses))));

/** The host of a URL as DNS and `net` want it: IPv6 literals without their brackets. */
export const hostOf = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1');

/**
 * Parse a webhook URL: absolute, http or https, no user name or password, at most 2048 characters.
 * @throws WebhookUrlError `INVALID_URL`
 */
export function parseWebhookUrl(text: string): URL {
  if (text.length > 2048) throw new WebhookUrlError('INVALID_URL', 'the URL is longer than 2048 characters');
  if (!URL.canParse(text)) throw new WebhookUrlError('INVALID_URL', 'not an absolute URL');
  const url = new URL(text);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new WebhookUrlError('INVALID_URL', 'must be an http or https URL');
  if (url.username || url.password) throw new WebhookUrlError('INVALID_URL', 'must not carry a user name or password');
  if (!url.hostname) throw new WebhookUrlError('INVALID_URL', 'has no host');
  return url;
}

/**
 * Every address `host` resolves to, each checked: an IP literal is checked as it is, a name is
 * resolved with `resolve` (all addresses) and refused if any of them is refused (a name that
 * points at one public and one private address would otherwise be a coin toss).
 * @throws WebhookUrlError `UNRESOLVABLE` or `PRIVATE_ADDRESS`
 */
export async function checkedAddresses(host: string, { allowPrivate, resolve = systemResolver }: { allowPrivate: boolean; resolve?: Resolver }): Promise<LookupAddress[]> {
  const family = isIP(host);
  let addresses: LookupAddress[];
  if (family !== 0) {
    addresses = [{ address: host, family }];
  } else {
    try {
      addresses = await resolve(host);
    } catch (error) {
      throw new WebhookUrlError('UNRESOLVABLE', `${host} does not resolve (${(error as { code?: string }).code ?? 'DNS error'})`);
    }
    if (addresses.length === 0) throw new WebhookUrlError('UNRESOLVABLE', `${host} does not resolve`);
  }
  if (!allowPrivate) {
    for (const { address } of addresses) {
      const problem = refusedAddress(address);
      if (problem) throw new WebhookUrlError('PRIVATE_ADDRESS', `${host} is refused: ${problem} (only public addresses receive webhooks)`);
    }
  }
  return addresses;
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for `http.request`/`net.connect` that resolves with {@link checkedAddresses}: the
 * connection goes to the very addresses that were checked, so a name that re-resolves to a
 * private address between a check and the connect (DNS rebinding) gets nowhere. `net` calls it
 * with `all: true` when it races the addresses (autoSelectFamily), else for one address.
 */
export function checkedLookup(options: { allowPrivate: boolean; resolve?: Resolver }) {
  return (hostname: string, lookupOptions: { all?: boolean } | number | undefined, callback: LookupCallback): void => {
    checkedAddresses(hostname, options).then(
      (addresses) => {
        if (typeof lookupOptions === 'object' && lookupOptions?.all) callback(null, addresses);
        else callback(null, addresses[0]!.address, addresses[0]!.family);
      },
      (error: Error) => callback(Object.assign(error, { code: (error as WebhookUrlError).code ?? 'ENOTFOUND' }) as NodeJS.ErrnoException, ''),
    );
  };
}
