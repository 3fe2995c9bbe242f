// Calls a service the way a Node app on Cloud Run calls another: Google's
// google-auth-library finds the metadata server (GCE_METADATA_HOST points
// it at the emulator), getIdTokenClient(audience) fetches ID tokens from it,
// and the client's request carries one as `Authorization: Bearer`.
//
//   node id-token-request.js URL [EXPECTED_STATUS]
//
// URL (or TARGET_URL) is the service to call; AUDIENCE, the token's
// audience, defaults to URL; EXPECTED_STATUS (or EXPECT_STATUS) defaults to
// 200. Prints one JSON object: the status and body it got, the credentials
// kind, project, account and universe google-auth-library found, and the
// token's claims (never the token). Exits 0 when the status is the
// expected one, 1 when not, 2 when it could not call at all.
'use strict';

const {GoogleAuth} = require('google-auth-library');

function claims(token) {
  const payload = token ? token.split('.')[1] : undefined;
  if (!payload) return null;
  const all = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  const {aud, email, email_verified, iss} = all;
  return {aud, email, email_verified, iss};
}

async function main() {
  const url = process.argv[2] || process.env.TARGET_URL;
  const expected = Number(process.argv[3] || process.env.EXPECT_STATUS || 200);
  if (!url || !Number.isInteger(expected)) {
    console.error('usage: node id-token-request.js URL [EXPECTED_STATUS]');
    return 2;
  }
  const audience = process.env.AUDIENCE || url;
  const auth = new GoogleAuth();
  const client = await auth.getIdTokenClient(audience);
  const response = await client.request({
    url,
    responseType: 'text',
    // A refusal is an answer to report, not an exception.
    validateStatus: () => true,
  });
  const credentials = await auth.getCredentials();
  const result = {
    status: response.status,
    body: String(response.data).slice(0, 500),
    credentials: client.idTokenProvider.constructor.name,
    projectId: await auth.getProjectId(),
    email: credentials.client_email,
    universeDomain: await auth.getUniverseDomain(),
    claims: claims(client.credentials.id_token),
  };
  console.log(JSON.stringify(result, null, 2));
  return response.status === expected ? 0 : 1;
}

main().then(
  code => {
    process.exitCode = code;
  },
  err => {
    console.error(`id-token-request: ${err && err.message ? err.message : err}`);
    process.exitCode = 2;
  },
);
