import { useState } from 'preact/hooks';
import { signIn } from '../api.js';
import { ErrorMessage } from '../components/common.js';

export function SignInPage({ onSignedIn }: { onSignedIn: () => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    try {
      await signIn(key.trim());
      onSignedIn();
    } catch (failure) {
      setError(failure as Error);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="sign-in">
      <form onSubmit={submit}>
        <h1>tunelab</h1>
        <p class="muted">
          Sign in with an API key of your organization. The server wrote the first one to <code>~/.tunelab/api-key</code> (or{' '}
          <code>$TUNELAB_HOME/api-key</code>); <code>tunelab admin keys create</code> makes more.
        </p>
        <label for="api-key">API key</label>
        <input id="api-key" type="password" autoComplete="current-password" value={key} onInput={(e) => setKey(e.currentTarget.value)} required autoFocus />
        <ErrorMessage error={error} />
        <button type="submit" disabled={busy || !key.trim()}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
