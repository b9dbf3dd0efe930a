import type { Mailer } from './notifications.js';
import type { SmtpSettings } from './settings.js';

/** Sends job e-mails through the SMTP server of `config.json`; nodemailer is loaded only when one is set. */
export async function smtpMailer(settings: SmtpSettings): Promise<Mailer> {
  const nodemailer = await import('nodemailer');
  const transport = nodemailer.createTransport({
    host: settings.host,
    port: settings.port,
    secure: settings.secure,
    ...(settings.auth ? { auth: settings.auth } : {}),
    // Bounded, as webhooks are: a mail server that hangs costs an attempt, not the queue.
    connectionTimeout: 15_000,
    greetingTimeout: 15_000,
    socketTimeout: 30_000,
  });
  return {
    async send(message) {
      await transport.sendMail({ from: settings.from, to: message.to, subject: message.subject, text: message.text });
    },
    close: () => transport.close(),
  };
}
