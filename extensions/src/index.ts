/**
 * Atelier's JupyterLab extension: one plugin per file, all of them listed here.
 * A new plugin is a new file in src/ and one line below.
 */
import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { connectPlugin } from './connect';

const plugins: JupyterFrontEndPlugin<any>[] = [
  connectPlugin
];

export default plugins;
