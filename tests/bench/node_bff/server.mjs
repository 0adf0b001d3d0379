// The Node BFF that bff's benchmark compares with (tests/bench/peers/node.py starts it): what a team would write
// with the usual npm packages. It logs in through the OpenID Provider (authorization code + PKCE S256, RFC 7636),
// keeps the tokens in an express-session stored in Redis (connect-redis), and proxies /api/ to the upstream with
// the access token as a bearer (RFC 6750 2.1), refreshing it when it has expired.
//
// Configuration from the environment: PORT, ISSUER, CLIENT_ID, CLIENT_SECRET, REDIS_URL, UPSTREAM, SESSION_SECRET.
import http from "node:http";

import { RedisStore } from "connect-redis";
import express from "express";
import session from "express-session";
import { createProxyMiddleware } from "http-proxy-middleware";
import * as oidc from "openid-client";
import { createClient } from "redis";

function setting(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`node-bff: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(setting("PORT"));
const origin = `http://127.0.0.1:${port}`;
const redirectUri = `${origin}/callback`;

// The reference IdP of the benchmark speaks plain HTTP on loopback.
const config = await oidc.discovery(
  new URL(setting("ISSUER")),
  setting("CLIENT_ID"),
  undefined,
  oidc.ClientSecretBasic(setting("CLIENT_SECRET")),
  { execute: [oidc.allowInsecureRequests] },
);

const redis = createClient({ url: setting("REDIS_URL") });
redis.on("error", (error) => console.error("node-bff: redis:", error.message));
await redis.connect();

const app = express();
app.disable("x-powered-by");
app.use(
  session({
    name: "nodebff.sid",
    store: new RedisStore({ client: redis, prefix: "nodebff:" }),
    secret: setting("SESSION_SECRET"),
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: "lax", maxAge: 8 * 3600 * 1000 },
  }),
);

app.get("/login", async (req, res, next) => {
  try {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    req.session.login = { verifier, state, nonce };
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: "openid profile",
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      state,
      nonce,
    });
    res.redirect(url.href);
  } catch (error) {
    next(error);
  }
});

app.get("/callback", async (req, res, next) => {
  const login = req.session.login;
  if (!login) {
    res.status(400).json({ error: "no_login_in_progress" });
    return;
  }
  try {
    const tokens = await oidc.authorizationCodeGrant(config, new URL(req.originalUrl, origin), {
      pkceCodeVerifier: login.verifier,
      expectedState: login.state,
      expectedNonce: login.nonce,
    });
    // A new session id after the login: the one the browser had before is not trusted (session fixation).
    req.session.regenerate((error) => {
      if (error) return next(error);
      req.session.sub = tokens.claims().sub;
      req.session.tokens = store(tokens);
      res.redirect("/");
    });
  } catch (error) {
    next(error);
  }
});

function store(tokens) {
  return {
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    expires_at: Date.now() + (tokens.expiresIn() ?? 300) * 1000,
  };
}

app.get("/", (req, res) => {
  res.json({ authenticated: Boolean(req.session.tokens) });
});

async function authenticated(req, res, next) {
  const tokens = req.session.tokens;
  if (!tokens) {
    res.status(401).json({ error: "unauthenticated" });
    return;
  }
  if (tokens.expires_at - 30_000 < Date.now()) {
    try {
      req.session.tokens = store(await oidc.refreshTokenGrant(config, tokens.refresh_token));
    } catch {
      req.session.destroy(() => res.status(401).json({ error: "session_expired" }));
      return;
    }
  }
  next();
}

const proxy = createProxyMiddleware({
  target: setting("UPSTREAM"),
  changeOrigin: true,
  xfwd: true,
  agent: new http.Agent({ keepAlive: true, maxSockets: 256 }),
  on: {
    proxyReq(proxyReq, req) {
      proxyReq.removeHeader("cookie");
      proxyReq.setHeader("authorization", `Bearer ${req.session.tokens.access_token}`);
    },
  },
});
app.use("/api", authenticated, proxy);

const server = app.listen(port, "127.0.0.1", () => console.log(`node-bff listening on ${origin}`));
server.keepAliveTimeout = 75_000;
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    redis.quit().finally(() => process.exit(0));
  });
}
