// A real OIDC provider for enforcer's identity tests, on loopback.
//
//   node provider.js PORT
//
// Issuer http://127.0.0.1:PORT, one client `ci` (secret `ci-secret`) allowed the
// client_credentials grant. Access tokens for the resource `urn:enforcer` (audience `enforcer`) are JWTs signed with a
// fresh ES256 key (published through discovery → jwks_uri), carrying the claims a CI job's
// token would (repository, workflow, actor, ref). Prints "ready ISSUER" when listening.
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.js PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'ci-es256', alg: 'ES256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  clients: [{
    client_id: 'ci',
    client_secret: 'ci-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    id_token_signed_response_alg: 'ES256',
  }],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:enforcer',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: '',
        audience: 'enforcer',
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  extraTokenClaims: () => ({
    repository: 'acme/shop',
    workflow: 'deploy',
    actor: 'octo',
    ref: 'refs/heads/main',
  }),
});
provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
