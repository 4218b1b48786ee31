//! Ctrl-C while jobs run: the first one asks the run to stop (its prompts are cancelled on
//! their servers, the summary so far is printed, the exit code is 130); a second one exits at
//! once, whatever is under way.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use smol::channel::{Receiver, Sender, bounded};

/// The exit code of an interrupted command (128 + SIGINT), as shells report it.
pub const EXIT_CODE: u8 = 130;

static PRESSED: AtomicU32 = AtomicU32::new(0);
static CHANNEL: OnceLock<Option<(Sender<()>, Receiver<()>)>> = OnceLock::new();

/// A Ctrl-C to wait for.
#[derive(Clone)]
pub struct Interrupt(Option<Receiver<()>>);

impl Interrupt {
    /// Handles Ctrl-C from now on in this process. Without a handler (none could be set) the
    /// returned `Interrupt` never fires and Ctrl-C ends the process as usual.
    pub fn install() -> Self {
        let channel = CHANNEL.get_or_init(|| {
            let (tx, rx) = bounded(1);
            let for_handler = tx.clone();
            ctrlc::set_handler(move || on_signal(&for_handler))
                .ok()
                .map(|()| (tx, rx))
        });
        Self(channel.as_ref().map(|(_, rx)| rx.clone()))
    }

    /// Completes at the first Ctrl-C after [`Interrupt::install`]; never without a handler.
    pub async fn pressed(&self) {
        match &self.0 {
            Some(rx) => {
                let _ = rx.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

fn on_signal(tx: &Sender<()>) {
    if PRESSED.fetch_add(1, Ordering::SeqCst) == 0 {
        let _ = tx.try_send(());
    } else {
        // The bars may be on screen: end their line before leaving.
        eprintln!("\ninterrupted again: exiting now");
        std::process::exit(i32::from(EXIT_CODE));
    }
}
