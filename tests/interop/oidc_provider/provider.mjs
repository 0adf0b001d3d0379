// panva's oidc-provider (OpenID Certified) configured as the independent OpenID Provider of bff's interop tests.
//
//   node provider.mjs            listens on a free 127.0.0.1 port; prints {"issuer": "http://127.0.0.1:PORT"}
//
// Clients register themselves (RFC 7591), so one provider serves every bff a test module starts. Logins use the
// provider's own development interactions (any login name, then consent), which a test scripts over HTTP.
// GET /_test/events lists what the provider did (grants, revocations, logouts) for the tests to assert on.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

// Access tokens for this resource are RFC 9068 JWTs that an upstream verifies with the JWKS alone.
const API_RESOURCE = 'https://api.interop.test';
const API_AUDIENCE = 'interop-api';
const API_SCOPE = 'api:read';
const ACCESS_TOKEN_TTL = Number(process.env.OP_ACCESS_TOKEN_TTL || 300);

const events = [];
function record(name, ctx, extra = {}) {
  events.push({
    event: name,
    client_id: ctx?.oidc?.client?.clientId ?? null,
    grant_type: ctx?.oidc?.params?.grant_type ?? null,
    ...extra,
  });
}

function jwk(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg}-${randomBytes(4).toString('hex')}` };
}

const server = createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [jwk('rsa', { modulusLength: 2048 }, 'RS256'), jwk('ec', { namedCurve: 'P-256' }, 'ES256')] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, name: `${sub} Example`, email: `${sub}@example.com`, email_verified: true };
      },
    };
  },
  claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
  scopes: ['openid', 'offline_access', API_SCOPE],
  pkce: { required: () => true },
  // Every refresh rotates the refresh token; a used one presented again revokes the whole grant (reuse detection).
  rotateRefreshToken: () => true,
  ttl: { AccessToken: ACCESS_TOKEN_TTL, IdToken: 300, RefreshToken: 3600, Session: 3600, Grant: 3600 },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
  // The provider's outgoing requests (back-channel logout) refuse special-use addresses, loopback included, against
  // SSRF; every server of these tests is on 127.0.0.1, so its guard (the request's dispatcher) is left out here.
  fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
  features: {
    devInteractions: { enabled: true },
    // A DPoP proof at the token endpoint must carry a nonce of the provider's (RFC 9449 8): the first is refused.
    dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
    registration: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => API_RESOURCE,
      useGrantedResource: async () => true,
      async getResourceServerInfo(_ctx, resource) {
        if (resource !== API_RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: API_SCOPE,
          audience: API_AUDIENCE,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
});

for (const name of ['grant.success', 'grant.revoked', 'end_session.success']) {
  provider.on(name, (ctx) => record(name, ctx));
}
// The logout tokens go to every client of the ended session, not only the one that asked (if any).
provider.on('backchannel.success', (ctx, client, accountId, sid) => {
  record('backchannel.success', ctx, { client_id: client.clientId, sub: accountId, sid });
});
provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
  record('backchannel.error', ctx, { client_id: client.clientId, sub: accountId, sid, error: String(err) });
});
provider.on('grant.error', (ctx, err) => record('grant.error', ctx, { error: err.error ?? String(err) }));

provider.use(async (ctx, next) => {
  if (ctx.path === '/_test/events' && ctx.method === 'GET') {
    ctx.body = { events };
    return;
  }
  await next();
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(); server.closeAllConnections(); process.exit(0); });
}
