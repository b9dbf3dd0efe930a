import { useEffect, useState } from 'preact/hooks';
import { apiKey, onSignedOut } from './api.js';
import { FilePage } from './pages/file.js';
import { FilesPage } from './pages/files.js';
import { JobPage } from './pages/job.js';
import { JobsPage } from './pages/jobs.js';
import { ModelsPage } from './pages/models.js';
import { PlaygroundPage } from './pages/playground.js';
import { SignInPage } from './pages/sign-in.js';
import { UsagePage } from './pages/usage.js';
import { WorkersPage } from './pages/workers.js';
import { href, useRoute, type Route } from './router.js';

const SECTIONS = [
  ['jobs', 'Jobs'],
  ['files', 'Files'],
  ['models', 'Models'],
  ['playground', 'Playground'],
  ['usage', 'Usage'],
  ['workers', 'Workers'],
] as const;

function page(route: Route) {
  const [section = 'jobs', id] = route.parts;
  switch (section) {
    case 'jobs':
      return id ? <JobPage id={id} /> : <JobsPage status={route.query.get('status')} />;
    case 'files':
      return id ? <FilePage id={id} /> : <FilesPage />;
    case 'models':
      return <ModelsPage />;
    case 'playground':
      return <PlaygroundPage left={route.query.get('left')} right={route.query.get('right')} />;
    case 'usage':
      return <UsagePage />;
    case 'workers':
      return <WorkersPage />;
    default:
      return <p class="error">There is no page "{route.parts.join('/')}".</p>;
  }
}

export function App() {
  const route = useRoute();
  const [signedIn, setSignedIn] = useState(apiKey.get() !== null);
  useEffect(() => onSignedOut(() => setSignedIn(false)), []);
  // Each page says where it is, for the browser's history and tabs.
  const section = SECTIONS.find(([name]) => name === (route.parts[0] ?? 'jobs'));
  useEffect(() => {
    document.title = `${section?.[1] ?? 'tunelab'} · tunelab`;
  }, [section]);

  if (!signedIn) return <SignInPage onSignedIn={() => setSignedIn(true)} />;
  return (
    <>
      {/* The fragment holds the page's route, so the skip link moves the focus itself instead of following #main. */}
      <a
        class="skip"
        href="#main"
        onClick={(event) => {
          event.preventDefault();
          document.getElementById('main')?.focus();
        }}
      >
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href('jobs')}>
          tunelab
        </a>
        <nav aria-label="Sections">
          {SECTIONS.map(([name, label]) => (
            <a key={name} href={href(name)} aria-current={section?.[0] === name ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <button
          class="link"
          onClick={() => {
            apiKey.clear();
            setSignedIn(false);
          }}
        >
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {page(route)}
      </main>
    </>
  );
}
