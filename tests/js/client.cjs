// jira.js (Version2Client) pointed at the broker's per-user Jira site, as a Node service would use it.
// Run by tests/test_client_libraries.py:  node client.cjs MODE SITE_BASE API_KEY
//   use:  myself, create an issue, read it back      -> {"myself", "created", "issue"}
//   fail: myself, then the low-level sendRequest on the OAuth servlet, each caught
//         -> {"myself": outcome, "servlet": outcome}, an outcome being the result or the error jira.js threw
// One JSON document on stdout; anything unexpected exits 1 with the error on stderr.
'use strict';

const { Version2Client } = require('jira.js');

function thrown(error) {
  const response = error && error.response;
  return {
    thrown: error && error.constructor ? error.constructor.name : typeof error,
    message: error && error.message,
    status: (error && error.status) || (response && response.status),
    data: response && response.data,
  };
}

async function outcome(call) {
  try {
    return { result: await call() };
  } catch (error) {
    return thrown(error);
  }
}

async function main() {
  const [mode, host, token] = process.argv.slice(2);
  const client = new Version2Client({ host, authentication: { personalAccessToken: token } });
  if (mode === 'use') {
    const myself = await client.myself.getCurrentUser();
    const created = await client.issues.createIssue({
      fields: { project: { key: 'ABC' }, summary: 'Made by jira.js through the broker', issuetype: { name: 'Task' } },
    });
    const issue = await client.issues.getIssue({ issueIdOrKey: created.key });
    return { myself, created, issue };
  }
  if (mode === 'fail') {
    return {
      myself: await outcome(() => client.myself.getCurrentUser()),
      servlet: await outcome(() =>
        client.sendRequest({ url: '/rest/api/2/../../../plugins/servlet/oauth/access-token', method: 'POST' }),
      ),
    };
  }
  throw new Error(`unknown mode ${mode}: use or fail`);
}

main().then(
  (result) => process.stdout.write(JSON.stringify(result)),
  (error) => {
    process.stderr.write(`${JSON.stringify(thrown(error))}\n${error && error.stack}\n`);
    process.exit(1);
  },
);
