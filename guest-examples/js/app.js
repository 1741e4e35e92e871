// user-report (JavaScript): a user provisioning report across targets.
//
// For each target: list the login accounts (UID >= 1000, or root, with a real shell) and
// who may use sudo, store the report as JSON on the target under `report_dir`, read it
// back to check it arrived intact, and return a summary of every target as JSON.
//
// Build: see build.sh (componentize-js against sdk/wit, helper from sdk/js).
import { task, WardenError, params, log, credentials, ssh, transfer } from './warden.js';

const SUDO_GROUPS = ['sudo', 'wheel', 'admin'];

function parseAccounts(passwd) {
  const accounts = [];
  for (const line of passwd.split('\n')) {
    const fields = line.split(':');
    if (fields.length < 7) continue;
    const [name, , uidText, , , , shell] = fields;
    const uid = Number(uidText);
    if ((uid === 0 || uid >= 1000) && !/(nologin|false)$/.test(shell)) {
      accounts.push({ name, uid, shell });
    }
  }
  return accounts;
}

function reportTarget(target, cred, reportDir) {
  const out = ssh.exec(target, cred, 'getent passwd');
  if (!out.ok) {
    throw new Error(`getent failed with status ${out.exitStatus}: ${out.stderrText().slice(0, 200)}`);
  }
  const accounts = parseAccounts(out.stdoutText());
  const groups = ssh.exec(target, cred, `getent group ${SUDO_GROUPS.join(' ')}`);
  const sudoers = [
    ...new Set(
      groups
        .stdoutText()
        .split('\n')
        .flatMap((line) => (line.split(':')[3] || '').split(','))
        .filter((m) => m),
    ),
  ].sort();
  const report = JSON.stringify({ target, accounts, sudoers });
  const path = `${reportDir.replace(/\/+$/, '')}/user-report-${target}.json`;
  const written = transfer.upload(target, cred, path, report, 0o600);
  const back = transfer.downloadText(target, cred, path);
  log.info(`${target}: ${accounts.length} login account(s), ${sudoers.length} sudoer(s), report ${path}`);
  return {
    target,
    accounts: accounts.map((a) => a.name),
    sudoers,
    report: path,
    bytes: written,
    intact: back === report,
  };
}

export const run = task(() => {
  const targets = params.textList('targets');
  const reportDir = params.text('report_dir');
  if (targets.length === 0) throw new Error('input `targets` must list at least one target');
  const cred = credentials.acquire(params.text('credential'));
  log.info(`user report on ${targets.length} target(s) as ${cred.username()}`);
  const entries = targets.map((target) => {
    try {
      return reportTarget(target, cred, reportDir);
    } catch (e) {
      if (!(e instanceof WardenError)) throw e;
      log.warn(`${target}: ${e.message}`);
      return { target, error: e.message };
    }
  });
  const failed = entries.filter((e) => e.error).length;
  log.info(`${entries.length} target(s) reported, ${failed} failed`);
  return JSON.stringify({ language: 'javascript', targets: entries, failed });
});
