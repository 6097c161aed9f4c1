import { describe, expect, it } from 'vitest';
import { checkedAddresses, parseWebhookUrl, refusedAddress, type Resolver } from '../src/ssrf.ts';

const resolver =
  (table: Record<string, string[]>): Resolver =>
  async (host) => {
    const addresses = table[host];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };

describe('refusedAddress', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.5.4', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.10.10', 'linkLocal'],
    ['fe80::1', 'linkLocal'],
    ['fc00::1', 'uniqueLocal'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['224.0.0.251', 'multicast'],
    ['ff02::1', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['192.0.2.10', 'reserved'],
    ['2002:7f00:1::1', '6to4'],
    ['64:ff9b::7f00:1', 'rfc6052'],
  ])('refuses %s (%s)', (address, range) => {
    expect(refusedAddress(address)).toContain(range);
  });

  it('names the cloud metadata addresses', () => {
    expect(refusedAddress('169.254.169.254')).toMatch(/metadata/);
    expect(refusedAddress('fd00:ec2::254')).toMatch(/metadata/);
  });

  it('reads an IPv4-mapped IPv6 address as the IPv4 address it carries', () => {
    expect(refusedAddress('::ffff:127.0.0.1')).toContain('loopback');
    expect(refusedAddress('::ffff:10.1.2.3')).toContain('private');
    expect(refusedAddress('::ffff:169.254.169.254')).toMatch(/metadata/);
    expect(refusedAddress('::ffff:8.8.8.8')).toBeUndefined();
  });

  it.each(['8.8.8.8', '93.184.216.34', '2606:4700:4700::1111', '2a00:1450:4001:80b::200e'])('accepts the public address %s', (address) => {
    expect(refusedAddress(address)).toBeUndefined();
  });
});

describe('parseWebhookUrl', () => {
  it('accepts http and https URLs', () => {
    expect(parseWebhookUrl('https://hooks.example.com/tributary?x=1').hostname).toBe('hooks.example.com');
    expect(parseWebhookUrl('http://[2606:4700::1]:8080/h').port).toBe('8080');
  });

  it.each(['ftp://example.com/x', 'file:///etc/passwd', 'javascript:alert(1)', 'example.com/hook', '', 'https://user:pw@example.com/'])('refuses %j', (text) => {
    expect(() => parseWebhookUrl(text)).toThrow(expect.objectContaining({ code: 'INVALID_URL' }));
  });
});

describe('checkedAddresses', () => {
  const resolve = resolver({
    'hooks.example.com': ['93.184.216.34', '2606:2800:220:1::1'],
    'internal.example.com': ['10.0.0.5'],
    'mixed.example.com': ['93.184.216.34', '127.0.0.1'],
    'metadata.example.com': ['169.254.169.254'],
  });

  it('returns every address of a public name', async () => {
    expect((await checkedAddresses('hooks.example.com', { allowPrivate: false, resolve })).map((a) => a.address)).toEqual(['93.184.216.34', '2606:2800:220:1::1']);
  });

  it('refuses a name with any private address among its answers', async () => {
    for (const host of ['internal.example.com', 'mixed.example.com', 'metadata.example.com']) {
      await expect(checkedAddresses(host, { allowPrivate: false, resolve }), host).rejects.toMatchObject({ code: 'PRIVATE_ADDRESS' });
    }
  });

  it('checks IP literals without resolving them', async () => {
    await expect(checkedAddresses('127.0.0.1', { allowPrivate: false, resolve })).rejects.toMatchObject({ code: 'PRIVATE_ADDRESS' });
    await expect(checkedAddresses('::1', { allowPrivate: false, resolve })).rejects.toMatchObject({ code: 'PRIVATE_ADDRESS' });
    expect(await checkedAddresses('8.8.8.8', { allowPrivate: false, resolve })).toEqual([{ address: '8.8.8.8', family: 4 }]);
  });

  it('refuses a name that does not resolve, private networks allowed or not', async () => {
    await expect(checkedAddresses('nowhere.example.com', { allowPrivate: false, resolve })).rejects.toMatchObject({ code: 'UNRESOLVABLE' });
    await expect(checkedAddresses('nowhere.example.com', { allowPrivate: true, resolve })).rejects.toMatchObject({ code: 'UNRESOLVABLE' });
  });

  it('lets private addresses through with allowPrivate', async () => {
    expect(await checkedAddresses('internal.example.com', { allowPrivate: true, resolve })).toEqual([{ address: '10.0.0.5', family: 4 }]);
  });

  it('refuses localhost through the system resolver', async () => {
    await expect(checkedAddresses('localhost', { allowPrivate: false })).rejects.toMatchObject({ code: 'PRIVATE_ADDRESS' });
  });
});
