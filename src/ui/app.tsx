import { useEffect, useState } from 'preact/hooks';
import { apiKey, get, onSignedOut, type OrganizationInfo } from './api.js';
import { ErrorMessage, Loading } from './components/common.js';
import { useLoad } from './components/use-load.js';
import { FilePage } from './pages/file.js';
import { FilesPage } from './pages/files.js';
import { JobPage } from './pages/job.js';
import { JobsPage } from './pages/jobs.js';
import { ModelsPage } from './pages/models.js';
import { PlaygroundPage } from './pages/playground.js';
import { SignInPage } from './pages/sign-in.js';
import { UsagePage } from './pages/usage.js';
import { WorkersForAdministratorsOnly, WorkersPage } from './pages/workers.js';
import { href, useRoute, type Route } from './router.js';

/** The sections, and whether only administrators' keys are offered them. */
const SECTIONS = [
  ['jobs', 'Jobs', false],
  ['files', 'Files', false],
  ['models', 'Models', false],
  ['playground', 'Playground', false],
  ['usage', 'Usage', false],
  ['workers', 'Workers', true],
] as const;

function page(route: Route, organization: OrganizationInfo) {
  const [section = 'jobs', id] = route.parts;
  switch (section) {
    case 'jobs':
      return id ? <JobPage id={id} /> : <JobsPage status={route.query.get('status')} />;
    case 'files':
      return id ? <FilePage id={id} /> : <FilesPage />;
    case 'models':
      return <ModelsPage mayPull={organization.administrator} />;
    case 'playground':
      return <PlaygroundPage left={route.query.get('left')} right={route.query.get('right')} />;
    case 'usage':
      return <UsagePage />;
    case 'workers':
      return organization.administrator ? <WorkersPage /> : <WorkersForAdministratorsOnly organization={organization.name} />;
    default:
      return <p class="error">There is no page "{route.parts.join('/')}".</p>;
  }
}

export function App() {
  const [signedIn, setSignedIn] = useState(apiKey.get() !== null);
  useEffect(() => onSignedOut(() => setSignedIn(false)), []);
  return signedIn ? <Dashboard onSignOut={() => setSignedIn(false)} /> : <SignInPage onSignedIn={() => setSignedIn(true)} />;
}

/** The pages of a signed-in key: which sections it is offered depends on its organization, read once per sign-in. */
function Dashboard({ onSignOut }: { onSignOut: () => void }) {
  const route = useRoute();
  const organization = useLoad((signal) => get<OrganizationInfo>('/organization', undefined, signal), []);
  const sections = SECTIONS.filter(([, , administrators]) => !administrators || organization.data?.administrator);
  // Each page says where it is, for the browser's history and tabs.
  const section = SECTIONS.find(([name]) => name === (route.parts[0] ?? 'jobs'));
  useEffect(() => {
    document.title = `${section?.[1] ?? 'tunelab'} · tunelab`;
  }, [section]);

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
          {sections.map(([name, label]) => (
            <a key={name} href={href(name)} aria-current={section?.[0] === name ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <button
          class="link"
          onClick={() => {
            apiKey.clear();
            onSignOut();
          }}
        >
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {organization.data ? page(route, organization.data) : organization.error ? <ErrorMessage error={organization.error} /> : <Loading what="your organization" />}
      </main>
    </>
  );
}
