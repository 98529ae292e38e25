//! The one keymap: the handlers, the help screen and the hint bar all read
//! [`BINDINGS`], so what the screen says is what the keys do.

use crate::ops::OpDef;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Where the keyboard focus is; decides which bindings apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Table,
    Detail,
    Log,
    /// The help popup is up.
    Help,
    /// The feeds popup is up.
    Feeds,
    /// The spend popup is up.
    Spend,
    /// A line of text is being typed (filter, log search); other keys type.
    Input,
}

impl Context {
    pub const ALL: [Context; 7] = [
        Context::Table,
        Context::Detail,
        Context::Log,
        Context::Help,
        Context::Feeds,
        Context::Spend,
        Context::Input,
    ];

    /// Where it is, in the help's words.
    pub fn name(self) -> &'static str {
        match self {
            Context::Table => "table",
            Context::Detail => "details",
            Context::Log => "log",
            Context::Help => "help",
            Context::Feeds => "feeds",
            Context::Spend => "spend",
            Context::Input => "typing",
        }
    }
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Open,
    Back,
    /// Runs one operation now (its key comes from its definition).
    Trigger(crate::model::Operation),
    /// Runs every operation now.
    TriggerAll,
    Cancel,
    Filter,
    SortNext,
    SortReverse,
    FocusLog,
    ToggleLog,
    LogLevel,
    LogScope,
    Freeze,
    Feeds,
    /// The spend overlay: sessions and feeds ranked by what they cost.
    Spend,
    /// Shows or hides the table's cost column.
    ToggleCost,
    /// Lifts the selected session's own budget.
    LiftBudget,
    /// Raises the selected session's own budget by one more of itself.
    RaiseBudget,
    /// A replay: plays or pauses.
    ReplayToggle,
    /// A replay: pauses and moves on to the next recorded moment.
    ReplayStep,
    /// A replay: ten seconds back.
    ReplayBack,
    /// A replay: ten seconds on.
    ReplayForward,
    ReplaySlower,
    ReplayFaster,
    /// A replay: asks for a time to go to.
    ReplaySeek,
    Help,
    /// Closes the popup that is up.
    Close,
    /// Keeps what was typed and stops typing.
    InputKeep,
    /// Clears what was typed and stops typing.
    InputClear,
    /// Deletes the last character typed.
    InputErase,
    Quit,
}

impl Action {
    /// True for the keys that move a replay.
    pub fn moves_a_replay(self) -> bool {
        matches!(
            self,
            Action::ReplayToggle
                | Action::ReplayStep
                | Action::ReplayBack
                | Action::ReplayForward
                | Action::ReplaySlower
                | Action::ReplayFaster
                | Action::ReplaySeek
        )
    }

    /// True for the actions that ask the engine to do something (a viewer
    /// may not).
    pub fn changes_the_engine(self) -> bool {
        matches!(
            self,
            Action::Trigger(_)
                | Action::TriggerAll
                | Action::Cancel
                | Action::LiftBudget
                | Action::RaiseBudget
        )
    }
}

/// A key, as the keymap names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Enter,
    Esc,
    Tab,
    Backspace,
    CtrlC,
}

impl Key {
    /// Maps a terminal key event; `None` for releases and keys we don't use.
    pub fn from_event(event: &KeyEvent) -> Option<Key> {
        if event.kind == KeyEventKind::Release {
            return None;
        }
        if event.modifiers.contains(KeyModifiers::CONTROL) {
            return matches!(event.code, KeyCode::Char('c')).then_some(Key::CtrlC);
        }
        Some(match event.code {
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Home => Key::Home,
            KeyCode::End => Key::End,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Esc,
            KeyCode::Tab | KeyCode::BackTab => Key::Tab,
            KeyCode::Backspace => Key::Backspace,
            _ => return None,
        })
    }
}

/// One line of the keymap.
#[derive(Debug)]
pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in help and hints.
    pub label: &'static str,
    pub action: Action,
    /// What it does, in a few words.
    pub hint: &'static str,
    /// Shown in the hint bar (the rest only in help).
    pub in_bar: bool,
    pub contexts: &'static [Context],
}

use Context::{Detail, Feeds, Help, Input, Log, Spend, Table};

const EVERYWHERE: &[Context] = &[Table, Detail, Log];
const SESSION: &[Context] = &[Table, Detail];

pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[Key::CtrlC],
        label: "^C",
        action: Action::Quit,
        hint: "quit",
        in_bar: false,
        contexts: &[Table, Detail, Log, Help, Feeds, Spend, Input],
    },
    Binding {
        keys: &[Key::Char('q')],
        label: "q",
        action: Action::Quit,
        hint: "quit",
        in_bar: true,
        contexts: &[Table, Detail, Log, Help, Feeds, Spend],
    },
    Binding {
        keys: &[Key::Esc, Key::Char('?')],
        label: "Esc",
        action: Action::Close,
        hint: "close help",
        in_bar: true,
        contexts: &[Help],
    },
    Binding {
        keys: &[Key::Esc, Key::Char('f')],
        label: "Esc",
        action: Action::Close,
        hint: "close feeds",
        in_bar: true,
        contexts: &[Feeds],
    },
    Binding {
        keys: &[Key::Esc, Key::Char('$')],
        label: "Esc",
        action: Action::Close,
        hint: "close spend",
        in_bar: true,
        contexts: &[Spend],
    },
    Binding {
        keys: &[Key::Enter],
        label: "↵",
        action: Action::InputKeep,
        hint: "keep",
        in_bar: true,
        contexts: &[Input],
    },
    Binding {
        keys: &[Key::Esc],
        label: "Esc",
        action: Action::InputClear,
        hint: "clear",
        in_bar: true,
        contexts: &[Input],
    },
    Binding {
        keys: &[Key::Backspace],
        label: "⌫",
        action: Action::InputErase,
        hint: "erase",
        in_bar: true,
        contexts: &[Input],
    },
    Binding {
        keys: &[Key::Char('?')],
        label: "?",
        action: Action::Help,
        hint: "help",
        in_bar: true,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Up, Key::Char('k')],
        label: "↑/k",
        action: Action::Up,
        hint: "up",
        in_bar: false,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::Down, Key::Char('j')],
        label: "↓/j",
        action: Action::Down,
        hint: "down",
        in_bar: false,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::PageUp],
        label: "PgUp",
        action: Action::PageUp,
        hint: "page up",
        in_bar: false,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::PageDown],
        label: "PgDn",
        action: Action::PageDown,
        hint: "page down",
        in_bar: false,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::Home, Key::Char('g')],
        label: "g/Home",
        action: Action::Top,
        hint: "first",
        in_bar: false,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::End, Key::Char('G')],
        label: "G/End",
        action: Action::Bottom,
        hint: "last / follow",
        in_bar: false,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::Enter],
        label: "↵",
        action: Action::Open,
        hint: "details",
        in_bar: true,
        contexts: &[Table],
    },
    Binding {
        keys: &[Key::Esc],
        label: "Esc",
        action: Action::Back,
        hint: "back",
        in_bar: true,
        contexts: &[Detail, Log],
    },
    Binding {
        keys: &[Key::Char('t')],
        label: "t",
        action: Action::TriggerAll,
        hint: "run all",
        in_bar: true,
        contexts: SESSION,
    },
    Binding {
        keys: &[Key::Char('c')],
        label: "c",
        action: Action::Cancel,
        hint: "cancel runs",
        in_bar: true,
        contexts: SESSION,
    },
    Binding {
        keys: &[Key::Char('/')],
        label: "/",
        action: Action::Filter,
        hint: "filter",
        in_bar: true,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::Char('o')],
        label: "o",
        action: Action::SortNext,
        hint: "sort by",
        in_bar: true,
        contexts: &[Table],
    },
    Binding {
        keys: &[Key::Char('O')],
        label: "O",
        action: Action::SortReverse,
        hint: "reverse sort",
        in_bar: false,
        contexts: &[Table],
    },
    Binding {
        keys: &[Key::Tab],
        label: "Tab",
        action: Action::FocusLog,
        hint: "log focus",
        in_bar: true,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::Char('l')],
        label: "l",
        action: Action::ToggleLog,
        hint: "show/hide log",
        in_bar: false,
        contexts: &[Table, Log],
    },
    Binding {
        keys: &[Key::Char('v')],
        label: "v",
        action: Action::LogLevel,
        hint: "log level",
        in_bar: true,
        contexts: &[Log],
    },
    Binding {
        keys: &[Key::Char('s')],
        label: "s",
        action: Action::LogScope,
        hint: "log: this session / all",
        in_bar: true,
        contexts: &[Log],
    },
    Binding {
        keys: &[Key::Char(' ')],
        label: "space",
        action: Action::Freeze,
        hint: "freeze",
        in_bar: true,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char('f')],
        label: "f",
        action: Action::Feeds,
        hint: "feeds",
        in_bar: false,
        contexts: SESSION,
    },
    Binding {
        keys: &[Key::Char('$')],
        label: "$",
        action: Action::Spend,
        hint: "spend",
        in_bar: false,
        contexts: SESSION,
    },
    Binding {
        keys: &[Key::Char('B')],
        label: "B",
        action: Action::LiftBudget,
        hint: "lift budget",
        in_bar: false,
        contexts: SESSION,
    },
    Binding {
        keys: &[Key::Char('+')],
        label: "+",
        action: Action::RaiseBudget,
        hint: "raise budget",
        in_bar: false,
        contexts: SESSION,
    },
    Binding {
        keys: &[Key::Char('p')],
        label: "p",
        action: Action::ReplayToggle,
        hint: "play/pause",
        in_bar: false,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char('.')],
        label: ".",
        action: Action::ReplayStep,
        hint: "step",
        in_bar: false,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char('<')],
        label: "<",
        action: Action::ReplayBack,
        hint: "-10s",
        in_bar: false,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char('>')],
        label: ">",
        action: Action::ReplayForward,
        hint: "+10s",
        in_bar: false,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char('[')],
        label: "[",
        action: Action::ReplaySlower,
        hint: "slower",
        in_bar: false,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char(']')],
        label: "]",
        action: Action::ReplayFaster,
        hint: "faster",
        in_bar: false,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char('T')],
        label: "T",
        action: Action::ReplaySeek,
        hint: "go to time",
        in_bar: false,
        contexts: EVERYWHERE,
    },
    Binding {
        keys: &[Key::Char('x')],
        label: "x",
        action: Action::ToggleCost,
        hint: "cost column",
        in_bar: false,
        contexts: &[Table],
    },
];

/// The action `key` has in `context`, if any: the fixed bindings first,
/// then, on a session, the trigger keys of the operations shown (each
/// operation's definition names its key).
pub fn action_for(key: Key, context: Context, ops: &[OpDef]) -> Option<Action> {
    BINDINGS
        .iter()
        .find(|b| b.contexts.contains(&context) && b.keys.contains(&key))
        .map(|b| b.action)
        .or_else(|| match key {
            Key::Char(c) if SESSION.contains(&context) => ops
                .iter()
                .find(|d| d.key == Some(c))
                .map(|d| Action::Trigger(d.op)),
            _ => None,
        })
}

/// The characters the fixed bindings take where a session is shown: an
/// operation's trigger key must be another.
pub fn taken_chars() -> Vec<char> {
    BINDINGS
        .iter()
        .filter(|b| b.contexts.iter().any(|c| SESSION.contains(c)))
        .flat_map(|b| b.keys.iter())
        .filter_map(|k| match k {
            Key::Char(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// The trigger bindings of `ops`, as help lists them: key and hint.
pub fn trigger_bindings(ops: &[OpDef]) -> Vec<(char, String)> {
    ops.iter()
        .filter_map(|d| Some((d.key?, format!("run {}", d.label.to_lowercase()))))
        .collect()
}

/// The key that triggers `op` among `ops`, if it has one.
pub fn trigger_key(ops: &[OpDef], op: crate::model::Operation) -> Option<char> {
    ops.iter().find(|d| d.op == op).and_then(|d| d.key)
}

/// The bindings of the hint bar for `context`, in keymap order.
/// The keys that move a replay, for the hint bar of a replay.
pub fn replay_hints(context: Context) -> impl Iterator<Item = &'static Binding> {
    BINDINGS
        .iter()
        .filter(move |b| b.action.moves_a_replay() && b.contexts.contains(&context))
}

pub fn hints(context: Context) -> impl Iterator<Item = &'static Binding> {
    BINDINGS
        .iter()
        .filter(move |b| b.in_bar && b.contexts.contains(&context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_keys_trigger_their_operation_on_a_session_only() {
        let ops = [crate::ops::OpDef::summary(), crate::ops::OpDef::mind_map()];
        let summary = Some(Action::Trigger(crate::model::Operation::SUMMARY));
        assert_eq!(action_for(Key::Char('1'), Context::Table, &ops), summary);
        assert_eq!(action_for(Key::Char('1'), Context::Detail, &ops), summary);
        assert_eq!(action_for(Key::Char('1'), Context::Log, &ops), None);
        assert_eq!(action_for(Key::Char('1'), Context::Table, &[]), None);
        assert_eq!(
            trigger_bindings(&ops),
            [
                ('1', "run summary".to_string()),
                ('2', "run mind map".to_string())
            ]
        );
        // No operation's key is a fixed binding's in a session's contexts.
        for (key, _) in trigger_bindings(&ops) {
            for context in SESSION {
                assert!(
                    !BINDINGS
                        .iter()
                        .any(|b| b.contexts.contains(context) && b.keys.contains(&Key::Char(key)))
                );
            }
        }
    }

    #[test]
    fn no_key_means_two_things_in_one_context() {
        for context in Context::ALL {
            let mut seen: Vec<Key> = Vec::new();
            for binding in BINDINGS.iter().filter(|b| b.contexts.contains(&context)) {
                for key in binding.keys {
                    assert!(!seen.contains(key), "{key:?} is bound twice in {context:?}");
                    seen.push(*key);
                }
            }
        }
    }

    #[test]
    fn every_hint_names_a_key_that_does_it() {
        for context in Context::ALL {
            for binding in hints(context) {
                assert_eq!(
                    action_for(binding.keys[0], context, &[]),
                    Some(binding.action)
                );
            }
        }
    }
}

#[cfg(test)]
mod every_mode {
    use super::*;

    #[test]
    fn every_context_has_a_way_out_in_its_hint_bar() {
        for context in Context::ALL {
            let actions: Vec<Action> = hints(context).map(|b| b.action).collect();
            assert!(
                actions.iter().any(|a| matches!(
                    a,
                    Action::Quit | Action::Close | Action::InputKeep | Action::Back
                )),
                "{context:?}: {actions:?}"
            );
        }
        // What the popups and typing offer is theirs alone.
        assert!(!hints(Context::Help).any(|b| b.action == Action::TriggerAll));
        assert!(!hints(Context::Input).any(|b| b.action == Action::Quit));
    }
}
