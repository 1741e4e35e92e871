// `{{name}}`: runs `uname -a` on a target and logs it.
//
// Build with `npm install` (once) and `warden build`, then `warden sign` and
// `warden module push`. `warden.js` next to this file wraps the raw bindings.
import { task, params, log, credentials, ssh } from './warden.js';

export const run = task(() => {
  const target = params.text('target');
  const credential = credentials.acquire(params.text('credential'));
  const text = ssh.exec(target, credential, 'uname -a').stdoutText().trim();
  log.info(`${target}: ${text}`);
  return text;
});
