// A real OAuth 2.0 authorization server for the tests: panva's oidc-provider
// (the version pinned in package-lock.json), in memory, on 127.0.0.1 only.
//
//   node provider.mjs PORT [PORT_FILE]
//
// PORT 0 lets the kernel pick a free port; the port is printed
// ("listening on http://127.0.0.1:PORT") and, when PORT_FILE is given,
// written there once the server accepts connections. The issuer is
// http://127.0.0.1:PORT; discovery at /.well-known/openid-configuration says
// where the token endpoint is (/token).
//
// The provider's own token endpoint decides everything; this file only
// configures it and adds three routes that exist on this test server alone:
//
//   POST /test/mint   a first refresh token (what an authorization-code or
//                     device login would have left behind), made through the
//                     provider's own Grant and RefreshToken models; form or
//                     query parameter client_id (default: the Basic client).
//                     Answers {"refresh_token", "client_id", "grant_id"}.
//   GET  /test/stats  the counters below, as JSON.
//   POST /test/reset  sets the counters to zero (tokens and grants stay).
//
// Configuration, by environment (the defaults are the test values):
//   OAUTH_ACCESS_TOKEN_TTL    access-token lifetime in seconds, refresh and
//                             client_credentials alike (default 4)
//   OAUTH_REFRESH_TOKEN_TTL   refresh-token lifetime in seconds (default 86400)
//   OAUTH_BASIC_CLIENT_ID / OAUTH_BASIC_CLIENT_SECRET    client_secret_basic
//   OAUTH_POST_CLIENT_ID  / OAUTH_POST_CLIENT_SECRET     client_secret_post
//   OAUTH_PUBLIC_CLIENT_ID                               public (auth none)
//
// Refresh tokens rotate at every refresh. A refresh token presented again
// after it was rotated is oidc-provider's reuse detection (RFC 9700 4.14):
// invalid_grant, and the whole grant is revoked, so the newest refresh token
// and the grant's access tokens die with it. Token requests are handled one
// at a time, so two requests presenting the same refresh token at the same
// moment also count as a reuse: the second finds the token consumed (the
// stock in-memory provider could let both through if they interleaved).
import http from 'node:http';
import crypto from 'node:crypto';
import { writeFileSync, renameSync } from 'node:fs';
import Provider from 'oidc-provider';

const env = process.env;
const seconds = (name, fallback) => {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`provider.mjs: ${name} must be a whole number of seconds >= 1, not "${v}"`);
    process.exit(2);
  }
  return n;
};
const accessTokenTTL = seconds('OAUTH_ACCESS_TOKEN_TTL', 4);
const refreshTokenTTL = seconds('OAUTH_REFRESH_TOKEN_TTL', 24 * 60 * 60);

// Each may refresh; the confidential ones may also use client_credentials
// (a public client cannot: it has no credentials).
const client = (id, method, secret) => ({
  client_id: id,
  ...(secret === undefined ? {} : { client_secret: secret }),
  token_endpoint_auth_method: method,
  grant_types: secret === undefined ? ['refresh_token'] : ['client_credentials', 'refresh_token'],
  response_types: [],
  redirect_uris: [],
  scope: 'api offline_access',
});
const clients = {
  basic: client(env.OAUTH_BASIC_CLIENT_ID || 'tokmgr-basic', 'client_secret_basic',
    env.OAUTH_BASIC_CLIENT_SECRET || 'tokmgr-basic-test-secret'),
  post: client(env.OAUTH_POST_CLIENT_ID || 'tokmgr-post', 'client_secret_post',
    env.OAUTH_POST_CLIENT_SECRET || 'tokmgr-post-test-secret'),
  public: client(env.OAUTH_PUBLIC_CLIENT_ID || 'tokmgr-public', 'none'),
};

const portArg = process.argv[2];
const portFile = process.argv[3];
if (portArg === undefined || !/^\d+$/.test(portArg) || Number(portArg) > 65535) {
  console.error('usage: node provider.mjs PORT [PORT_FILE]   (PORT 0: any free port)');
  process.exit(2);
}

// ---- counters -------------------------------------------------------------
const zero = () => ({
  refresh_success: 0, // refresh_token grants answered with tokens
  refresh_reuse_detected: 0, // a consumed (rotated) refresh token came back
  grants_revoked: 0, // grants revoked (by reuse detection, or otherwise)
  refresh_tokens_consumed: 0, // rotations: refresh tokens marked used
  refresh_tokens_minted: 0, // first refresh tokens made by /test/mint
  client_credentials_success: 0, // client_credentials grants answered with a token
  token_errors: {}, // token endpoint errors by error code (invalid_grant, invalid_client, ...)
  token_error_details: {}, // the same by the provider's detail ("refresh token already used", ...)
  refresh_by_grant: {}, // refresh_success by grant id
  server_errors: 0,
});
let stats = zero();
const bump = (map, key) => { map[key] = (map[key] || 0) + 1; };

// ---- the provider -----------------------------------------------------------
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'RS256' };

const configuration = {
  clients: Object.values(clients),
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', 'api'],
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    // No resource indicator is needed: access tokens are opaque.
    resourceIndicators: { enabled: false },
  },
  rotateRefreshToken: true,
  revokeGrantPolicy: () => true,
  ttl: {
    AccessToken: accessTokenTTL,
    ClientCredentials: accessTokenTTL,
    RefreshToken: refreshTokenTTL,
    Grant: refreshTokenTTL,
    IdToken: 60 * 60,
    Interaction: 60 * 60,
    Session: 60 * 60,
    AuthorizationCode: 60,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
  },
  // Answers carry the error and its description; never a token or a secret.
  renderError: async (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
};

// Listen first (so PORT 0 is known), then make the provider with its issuer.
const server = http.createServer();
server.listen(Number(portArg), '127.0.0.1');
await new Promise((resolve, reject) => { server.once('listening', resolve); server.once('error', reject); })
  .catch((err) => { console.error(`provider.mjs: cannot listen on 127.0.0.1:${portArg}: ${err.message}`); process.exit(1); });
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, configuration);

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  if (type === 'refresh_token') {
    stats.refresh_success += 1;
    const grant = ctx.oidc.entities.Grant;
    if (grant) bump(stats.refresh_by_grant, grant.jti);
  } else if (type === 'client_credentials') {
    stats.client_credentials_success += 1;
  }
});
provider.on('grant.error', (ctx, err) => {
  bump(stats.token_errors, err.error || 'unknown');
  if (err.error_detail) bump(stats.token_error_details, err.error_detail);
  if (err.error === 'invalid_grant' && err.error_detail === 'refresh token already used') {
    stats.refresh_reuse_detected += 1;
  }
});
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });
provider.on('refresh_token.consumed', () => { stats.refresh_tokens_consumed += 1; });
provider.on('server_error', (ctx, err) => {
  stats.server_errors += 1;
  bump(stats.token_errors, 'server_error');
  console.error(`server_error: ${err && err.message}`);
});

// One token request at a time (see the top of this file).
const tokenPath = new URL(provider.urlFor('token')).pathname;
let tokenQueue = Promise.resolve();
provider.use(async (ctx, next) => {
  if (ctx.path !== tokenPath) return next();
  const before = tokenQueue;
  let release;
  tokenQueue = new Promise((resolve) => { release = resolve; });
  await before;
  try {
    return await next();
  } finally {
    release();
  }
});

// ---- the test routes ----------------------------------------------------------
const readBody = (req) => new Promise((resolve, reject) => {
  let size = 0;
  const chunks = [];
  req.on('data', (c) => {
    size += c.length;
    if (size > 64 * 1024) { reject(new Error('body too large')); req.destroy(); return; }
    chunks.push(c);
  });
  req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  req.on('error', reject);
});
const send = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(`${JSON.stringify(body)}\n`);
};

async function mint(clientId) {
  const client = await provider.Client.find(clientId);
  if (!client || !client.grantTypeAllowed('refresh_token')) {
    return [400, { error: 'invalid_client', error_description: 'no such client, or it may not refresh' }];
  }
  const accountId = `user-of-${clientId}`;
  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope('offline_access');
  const grantId = await grant.save();
  const refreshToken = new provider.RefreshToken({
    accountId,
    client,
    grantId,
    gty: 'authorization_code',
    scope: 'offline_access',
    authTime: Math.floor(Date.now() / 1000),
    iiat: Math.floor(Date.now() / 1000),
  });
  const value = await refreshToken.save();
  stats.refresh_tokens_minted += 1;
  return [200, { refresh_token: value, client_id: clientId, grant_id: grantId }];
}

async function testRoute(req, res, url) {
  if (url.pathname === '/test/stats' && req.method === 'GET') return send(res, 200, stats);
  if (url.pathname === '/test/reset' && req.method === 'POST') {
    stats = zero();
    return send(res, 200, stats);
  }
  if (url.pathname === '/test/mint' && req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const clientId = form.get('client_id') || url.searchParams.get('client_id') || clients.basic.client_id;
    const [status, body] = await mint(clientId);
    return send(res, status, body);
  }
  return send(res, 404, { error: 'not_found' });
}

const providerCallback = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/test/')) {
    testRoute(req, res, url).catch((err) => send(res, 500, { error: 'server_error', error_description: err.message }));
  } else {
    providerCallback(req, res);
  }
});

if (portFile) {
  writeFileSync(`${portFile}.tmp`, `${port}\n`);
  renameSync(`${portFile}.tmp`, portFile);
}
console.log(`listening on ${issuer} (access tokens live ${accessTokenTTL} s, refresh tokens ${refreshTokenTTL} s)`);

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections(); // keep-alive clients would hold close() open
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
